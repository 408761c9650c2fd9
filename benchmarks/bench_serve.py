"""Load test of ``acfd serve`` on loopback: throughput and latency percentiles at several client
counts, memory before/after many requests, a run with bad uploads mixed in, and hostile cases.

Starts ``acfd serve`` as a subprocess (the real CLI, worker processes and all), then drives it with
asyncio + httpx clients, each sending its next request when the previous one is answered. Bounded:
at most ``--requests`` per level and ``--max-seconds`` per phase; each hostile case runs
``--hostile-seconds``. Every connection goes to 127.0.0.1 only.

Hostile cases (``--hostile``), each beside ``--good-clients`` closed-loop clients uploading the
small sample image, whose success rate and latency are what the case measures:

- ``baseline``: the good clients alone;
- ``large``: ``--large-clients`` clients uploading a 6300x6300 JPEG each, in a closed loop
  (valid, under every limit);
- ``slow``: ``--slow-uploaders`` connections that send headers with ``Content-Length: 100000``,
  then one byte a second, each replaced when the server answers or closes it;
- ``idle``: ``--idle-connections`` connections that send nothing, each replaced when closed.

For each: the good requests' success rate and p50 / p95 latency, the server's peak RSS (its process
tree, sampled every 0.2 s) and what the hostile side saw.

Usage (niced, as everything CPU-heavy here)::

    nice -n 10 .venv/bin/python benchmarks/bench_serve.py                       # defaults below
    nice -n 10 .venv/bin/python benchmarks/bench_serve.py --max-batch 1         # batching off
    nice -n 10 .venv/bin/python benchmarks/bench_serve.py --clients 16 --memory-requests 0
    nice -n 10 .venv/bin/python benchmarks/bench_serve.py --no-levels --memory-requests 0 --bad-fraction 0 --hostile

Memory is the summed RSS of the server's process tree (read from /proc, Linux).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import typer

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "personai_icartoonface_dettrain_00330.jpg"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_mb(pid: int) -> float:
    """Summed resident memory (MB) of ``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def bad_uploads(good: bytes) -> list[tuple[bytes, str]]:
    """Corrupt, truncated, empty, non-image and wrong-type bodies."""
    return [
        (good[: len(good) // 3], "image/jpeg"),  # truncated
        (b"\xff\xd8\xff" + os.urandom(2000), "image/jpeg"),  # corrupt
        (b"", "image/png"),  # empty
        (b"<html>not an image</html>", "image/png"),  # not an image
        (good, "text/plain"),  # wrong content type
    ]


async def run_level(base: str, clients: int, requests: int, max_s: float, good: bytes, bad_frac: float = 0.0) -> dict:
    """``clients`` closed-loop clients until ``requests`` are answered or ``max_s`` passes."""
    bads = bad_uploads(good)
    rng = random.Random(0)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    good_failures = 0
    bad_not_4xx = 0
    sent = 0
    deadline = time.perf_counter() + max_s

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal sent, good_failures, bad_not_4xx
        while sent < requests and time.perf_counter() < deadline:
            sent += 1
            is_bad = rng.random() < bad_frac
            body, ctype = rng.choice(bads) if is_bad else (good, "image/jpeg")
            t0 = time.perf_counter()
            try:
                r = await http.post(f"{base}/v1/detect", content=body, headers={"content-type": ctype})
                code = r.status_code
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            dt = time.perf_counter() - t0
            statuses[str(code)] = statuses.get(str(code), 0) + 1
            if is_bad:
                bad_not_4xx += not (isinstance(code, int) and 400 <= code < 500)
            else:
                latencies.append(dt)
                good_failures += code != 200

    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    wall = time.perf_counter() - start
    lat = np.asarray(latencies) * 1000
    return {
        "clients": clients,
        "requests": sum(statuses.values()),
        "seconds": round(wall, 1),
        "good_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "statuses": statuses,
        "good_failures": good_failures,
        "bad_not_4xx": bad_not_4xx,
    }


class RssSampler:
    """The peak summed RSS of a process tree, sampled every ``period_s`` while running."""

    def __init__(self, pid: int, period_s: float = 0.2) -> None:
        self.pid, self.period_s, self.peak_mb = pid, period_s, 0.0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            self.peak_mb = max(self.peak_mb, tree_rss_mb(self.pid))
            await asyncio.sleep(self.period_s)

    def __enter__(self) -> RssSampler:
        self.peak_mb = tree_rss_mb(self.pid)
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.peak_mb = max(self.peak_mb, tree_rss_mb(self.pid))


def large_jpeg(image: Path, side: int = 6300) -> bytes:
    """``image`` stretched to ``side`` x ``side`` as a JPEG (a valid large upload)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    with Image.open(image) as im:
        im.convert("RGB").resize((side, side), Image.BILINEAR).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


async def good_clients(base: str, clients: int, good: bytes, stop: asyncio.Event) -> dict:
    """Closed-loop clients uploading ``good`` until ``stop``: success rate and latency."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}

    async def client(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                r = await http.post(f"{base}/v1/detect", content=good, headers={"content-type": "image/jpeg"})
                code: int | str = r.status_code
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            statuses[str(code)] = statuses.get(str(code), 0) + 1
            if code == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                await asyncio.sleep(0.2)  # a refused client waits a little, as Retry-After asks

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    sent = sum(statuses.values())
    lat = np.asarray(latencies) * 1000
    return {
        "good_sent": sent,
        "good_ok": len(latencies),
        "good_success": round(len(latencies) / sent, 3) if sent else None,
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
        "good_statuses": statuses,
    }


async def large_uploaders(base: str, clients: int, data: bytes, stop: asyncio.Event) -> dict:
    statuses: dict[str, int] = {}

    async def client(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            try:
                r = await http.post(f"{base}/v1/detect", content=data, headers={"content-type": "image/jpeg"})
                code: int | str = r.status_code
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            statuses[str(code)] = statuses.get(str(code), 0) + 1
            if code != 200:
                await asyncio.sleep(0.5)

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return {"large_statuses": statuses}


async def replaced_connections(port: int, count: int, stop: asyncio.Event, session) -> tuple[dict[str, int], list[float]]:
    """``count`` connections at once, each running ``session(reader, writer) -> outcome`` and replaced
    when it ends, until ``stop``: how each ended (counted) and how long each lasted."""
    outcomes: dict[str, int] = {}
    lifetimes: list[float] = []

    async def one() -> None:
        while not stop.is_set():
            start = time.monotonic()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.5)
                continue
            outcome = "closed"
            try:
                outcome = await session(reader, writer)
            except (OSError, IndexError):
                pass
            finally:
                writer.close()
            if not stop.is_set():
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                lifetimes.append(time.monotonic() - start)

    await asyncio.gather(*(one() for _ in range(count)))
    return outcomes, lifetimes


def _median_s(values: list[float]) -> float | None:
    return round(float(np.median(values)), 1) if values else None


async def slow_uploaders(port: int, count: int, stop: asyncio.Event) -> dict:
    """Connections sending a 100,000-byte body one byte a second, each replaced when it ends."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        writer.write(b"POST /v1/detect HTTP/1.1\r\nHost: bench\r\nContent-Type: image/jpeg\r\n"
                     b"Content-Length: 100000\r\n\r\n")
        while not stop.is_set():
            writer.write(b"\0")
            await writer.drain()
            try:
                line = await asyncio.wait_for(reader.readline(), 1.0)
            except TimeoutError:
                continue
            return line.split()[1].decode() if line.startswith(b"HTTP/") else "closed"
        return "stopped"

    answers, lifetimes = await replaced_connections(port, count, stop, session)
    return {"slow_answers": answers, "slow_lifetime_s": _median_s(lifetimes)}


async def idle_connections(port: int, count: int, stop: asyncio.Event) -> dict:
    """Connections that send nothing, each replaced when the server closes it."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        while not stop.is_set():
            try:
                if not await asyncio.wait_for(reader.read(1024), 0.5):
                    return "closed"
            except TimeoutError:
                continue
        return "stopped"

    ended, lifetimes = await replaced_connections(port, count, stop, session)
    return {"idle_closed_by_server": ended.get("closed", 0), "idle_lifetime_s": _median_s(lifetimes)}


async def run_hostile(case: str, base: str, port: int, pid: int, good: bytes, opts: dict) -> dict:
    """One hostile case for ``seconds``, beside the good clients."""
    stop = asyncio.Event()
    tasks = [good_clients(base, opts["good_clients"], good, stop)]
    if case == "large":
        tasks.append(large_uploaders(base, opts["large_clients"], opts["large_jpeg"], stop))
    elif case == "slow":
        tasks.append(slow_uploaders(port, opts["slow_uploaders"], stop))
    elif case == "idle":
        tasks.append(idle_connections(port, opts["idle_connections"], stop))
    with RssSampler(pid) as rss:
        loop = asyncio.get_running_loop()
        loop.call_later(opts["seconds"], stop.set)
        parts = await asyncio.gather(*tasks)
    row = {"case": case, "seconds": opts["seconds"], "peak_rss_mb": round(rss.peak_mb, 1)}
    for part in parts:
        row.update(part)
    return row


def hostile_table(rows: list[dict]) -> str:
    lines = ["| case | good success | p50 ms | p95 ms | peak RSS MB | hostile side |", "|---|---|---|---|---|---|"]
    for r in rows:
        hostile = {k: v for k, v in r.items() if k.startswith(("large_", "slow_", "idle_"))}
        lines.append(f"| {r['case']} | {r['good_ok']}/{r['good_sent']} | {r['p50_ms']} | {r['p95_ms']} | "
                     f"{r['peak_rss_mb']} | {json.dumps(hostile) if hostile else '-'} |")
    return "\n".join(lines)


def main(
    clients: list[int] = typer.Option([1, 4, 16], help="Concurrent client counts to measure."),
    requests: int = typer.Option(200, help="Requests per client-count level."),
    memory_requests: int = typer.Option(2000, help="Requests between the two memory readings (0: skip)."),
    bad_fraction: float = typer.Option(0.1, help="Share of bad uploads in the mixed run."),
    max_seconds: float = typer.Option(300, help="Time bound per phase."),
    workers: int = typer.Option(1, help="acfd serve --workers."),
    max_batch: int = typer.Option(8, help="acfd serve --max-batch (1: no dynamic batching)."),
    model: str | None = typer.Option(None, help="acfd serve --model (default: the shipped model)."),
    scale: int = typer.Option(640, help="acfd serve --scale."),
    image: Path = typer.Option(SAMPLE, help="The image every good request uploads."),
    json_out: Path | None = typer.Option(None, help="Also write the figures here."),
    levels: bool = typer.Option(True, help="Run the client-count levels."),
    hostile: bool = typer.Option(False, help="Run the hostile cases (baseline, large, slow, idle)."),
    hostile_seconds: float = typer.Option(30, help="Duration of each hostile case."),
    good_clients_n: int = typer.Option(2, "--good-clients", help="Good clients beside each hostile case."),
    large_clients: int = typer.Option(16, help="Clients uploading a 6300x6300 JPEG at once."),
    slow_uploaders_n: int = typer.Option(32, "--slow-uploaders", help="Slow-upload connections at once."),
    idle_connections_n: int = typer.Option(200, "--idle-connections", help="Idle connections at once."),
) -> None:
    """Measure acfd serve under load on this machine (loopback only)."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "acfd", "serve", "--port", str(port), "--workers", str(workers),
           "--max-batch", str(max_batch), "--scale", str(scale), "--log-level", "warning"]
    if model:
        cmd += ["--model", model]
    server = subprocess.Popen(cmd)
    good = image.read_bytes()
    report: dict = {"workers": workers, "max_batch": max_batch, "scale": scale, "image": image.name,
                    "cpus": os.cpu_count(), "levels": []}
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).json()["status"] == "ok":
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.5)
        asyncio.run(run_level(base, 2, 10, 60, good))  # warm-up (first batches, allocator)
        for n in clients if levels else []:
            level = asyncio.run(run_level(base, n, requests, max_seconds, good))
            report["levels"].append(level)
            print(json.dumps(level), flush=True)
        if memory_requests:
            before = tree_rss_mb(server.pid)
            run = asyncio.run(run_level(base, 4, memory_requests, max_seconds * 4, good))
            after = tree_rss_mb(server.pid)
            report["memory"] = {"requests": run["requests"], "rss_before_mb": round(before, 1),
                                "rss_after_mb": round(after, 1), "good_failures": run["good_failures"]}
            print(json.dumps(report["memory"]), flush=True)
        if bad_fraction > 0:
            mixed = asyncio.run(run_level(base, 4, requests, max_seconds, good, bad_frac=bad_fraction))
            report["mixed_bad_uploads"] = mixed
            print(json.dumps(mixed), flush=True)
        if hostile:
            opts = {"seconds": hostile_seconds, "good_clients": good_clients_n, "large_clients": large_clients,
                    "large_jpeg": large_jpeg(image), "slow_uploaders": slow_uploaders_n,
                    "idle_connections": idle_connections_n}
            report["hostile"] = []
            for case in ("baseline", "large", "slow", "idle"):
                row = asyncio.run(run_hostile(case, base, port, server.pid, good, opts))
                report["hostile"].append(row)
                print(json.dumps(row), flush=True)
                time.sleep(2)  # let the server settle between cases
            print(hostile_table(report["hostile"]), flush=True)
        report["health"] = httpx.get(f"{base}/healthz").json()
    finally:
        server.terminate()
        server.wait(timeout=30)
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    typer.run(main)
