"""Load test of ``acfd serve`` on loopback: throughput and latency percentiles at several client
counts, memory before/after many requests, and a run with bad uploads mixed in.

Starts ``acfd serve`` as a subprocess (the real CLI, worker processes and all), then drives it with
asyncio + httpx clients, each sending its next request when the previous one is answered. Bounded:
at most ``--requests`` per level and ``--max-seconds`` per phase.

Usage (niced, as everything CPU-heavy here)::

    nice -n 10 .venv/bin/python benchmarks/bench_serve.py                       # defaults below
    nice -n 10 .venv/bin/python benchmarks/bench_serve.py --max-batch 1         # batching off
    nice -n 10 .venv/bin/python benchmarks/bench_serve.py --clients 16 --memory-requests 0

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
        for n in clients:
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
        report["health"] = httpx.get(f"{base}/healthz").json()
    finally:
        server.terminate()
        server.wait(timeout=30)
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    typer.run(main)
