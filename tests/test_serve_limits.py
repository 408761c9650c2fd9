"""``acfd serve`` under hostile load: large valid images, slow uploads, idle and slow-header
connections, clients that go away mid-upload, and the API key (live sockets on 127.0.0.1 only)."""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_serve import Dets, FixedDetector, _wait_for, png_bytes

from acfd.serve import ServeSettings, create_app
from acfd.serve.server import GuardedH11Protocol, exposure_warning, uvicorn_options

PNG = {"content-type": "image/png"}


@contextlib.contextmanager
def guarded_server(app, settings: ServeSettings) -> Iterator[str]:
    """The app behind uvicorn with the service's connection options (as ``acfd serve`` runs it), on a
    free loopback port, logging through the root logger (so ``caplog`` sees uvicorn's records)."""
    import uvicorn

    protocol = type("TestProtocol", (GuardedH11Protocol,), {"settings": settings})
    options = {**uvicorn_options(settings), "http": protocol, "timeout_graceful_shutdown": 2}
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on", **options))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
        time.sleep(0.02)
    try:
        yield "http://127.0.0.1:%d" % sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (whatever it sends before)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
        return True
    except (TimeoutError, socket.timeout):
        return False
    except ConnectionResetError:
        return True


def _answer(sock: socket.socket, seconds: float = 5) -> str:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(seconds)
    chunks = []
    with contextlib.suppress(TimeoutError, socket.timeout, ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def _partial_upload(base: str, declared: int = 100_000, sent: bytes = b"\0") -> socket.socket:
    sock = _connect(base)
    head = f"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {declared}\r\n\r\n"
    sock.sendall(head.encode() + sent)
    return sock


# -- 1. memory under large valid images ------------------------------------------------------------


class DarkBoxDetector:
    """Finds the dark rectangle in each image it is given; records the image sizes it saw."""

    def __init__(self) -> None:
        self.cfg = type("Cfg", (), {"name": "dark-box"})()
        self.scales = ()
        self.shapes: list[tuple[int, int]] = []

    def detect_arrays(self, images, batch_size=None):
        out = []
        for im in images:
            self.shapes.append(im.shape[:2])
            ys, xs = np.nonzero(im.mean(axis=2) < 100)
            out.append(Dets(np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], float), np.array([0.9])))
        return out


def _jpeg(size: tuple[int, int], dark: tuple[int, int, int, int] | None = None) -> bytes:
    im = Image.new("RGB", size, (250, 250, 250))
    if dark is not None:
        im.paste((0, 0, 0), dark)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_a_large_jpeg_is_decoded_reduced_and_boxes_come_back_in_its_pixels():
    detector = DarkBoxDetector()
    data = _jpeg((3200, 2400), (800, 600, 1600, 1400))
    with TestClient(create_app(lambda s: detector, ServeSettings(scale=640))) as client:
        r = client.post("/v1/detect", content=data, headers={"content-type": "image/jpeg"})
        small = client.post("/v1/detect", content=_jpeg((848, 472), (80, 40, 160, 120)), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    assert detector.shapes == [(600, 800), (472, 848)]  # decoded at 1/4 (still >= 640); small ones whole
    assert r.json()["image_size"] == [3200, 2400]
    np.testing.assert_allclose(r.json()["faces"][0]["box"], [800, 600, 1600, 1400], atol=4)
    np.testing.assert_allclose(small.json()["faces"][0]["box"], [80, 40, 160, 120], atol=1)


def test_decoded_pixels_in_flight_stay_within_the_budget(live_server):
    gate = threading.Event()
    detector = FixedDetector(gate)
    settings = ServeSettings(max_pixels=1_000_000, max_pixels_in_flight=2_000_000, max_batch=1)
    base = live_server(create_app(lambda s: detector, settings))
    health = lambda: httpx.get(f"{base}/healthz").json()  # noqa: E731
    results: list = []

    def post() -> None:
        results.append(httpx.post(f"{base}/v1/detect", content=png_bytes(1000, 1000), headers=PNG, timeout=30))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    _wait_for(lambda: health()["in_flight"] == 4 and health()["queued"] == 1)
    time.sleep(0.3)  # would the other two be decoded and queued too?
    h = health()
    assert h["queued"] == 1 and h["pixels_in_flight"] == 2_000_000 and len(detector.batch_sizes) == 1
    gate.set()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200] * 4
    assert health()["pixels_in_flight"] == 0


def test_large_requests_give_memory_back(monkeypatch):
    from acfd.serve import memory, service

    assert memory.trim_memory() is (sys.platform == "linux")  # glibc here
    assert memory.limit_malloc_arenas() is (sys.platform == "linux")
    trims: list[int] = []
    monkeypatch.setattr(service, "trim_memory", lambda: trims.append(1))
    with TestClient(create_app(lambda s: FixedDetector(), ServeSettings())) as client:
        assert client.post("/v1/detect", content=png_bytes(40, 30), headers=PNG).status_code == 200
        time.sleep(0.2)
        assert trims == []  # a small image: nothing to give back
        assert client.post("/v1/detect", content=png_bytes(2500, 2000), headers=PNG).status_code == 200
        _wait_for(lambda: trims == [1], 5)


SERVER_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, uvicorn
    from acfd.serve import ServeSettings, create_app

    class Dets:
        def __init__(self, boxes, scores):
            self.boxes, self.scores = boxes, scores

    class Detector:
        cfg = type("Cfg", (), {"name": "fixed"})()
        scales = ()
        def detect_arrays(self, images, batch_size=None):
            return [Dets(np.array([[1.0, 1.0, 9.0, 9.0]]), np.array([0.9])) for _ in images]

    uvicorn.run(create_app(lambda s: Detector(), ServeSettings()), host="127.0.0.1", port=int(sys.argv[1]),
                log_level="warning")
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _vm(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_concurrent_large_jpegs_keep_the_servers_memory_small(tmp_path):
    """8 concurrent 6300x6300 JPEGs (40 MP each, under every limit): whole decodes would hold
    ~300 MB each; reduced ones and the pixel budget keep the server's peak growth far lower."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: _healthy(base), 60)
        before = _vm(proc.pid, "VmHWM")
        rng = np.random.default_rng(0)
        big = Image.fromarray(rng.integers(0, 255, (63, 63, 3), dtype=np.uint8)).resize((6300, 6300))
        buf = io.BytesIO()
        big.save(buf, format="JPEG", quality=90)
        data, results = buf.getvalue(), []

        def post() -> None:
            results.append(httpx.post(f"{base}/v1/detect", content=data, headers={"content-type": "image/jpeg"}, timeout=60))

        threads = [threading.Thread(target=post) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r.status_code for r in results] == [200] * 8
        assert results[0].json()["image_size"] == [6300, 6300]
        grown = _vm(proc.pid, "VmHWM") - before
        assert grown < 600 * 1024 * 1024, f"peak RSS grew by {grown / 2**20:.0f} MB"
    finally:
        proc.terminate()
        proc.wait(20)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).json()["status"] == "ok"
    except httpx.HTTPError:
        return False


# -- 2. slow uploads -----------------------------------------------------------------------------------


def test_slow_uploads_neither_hold_request_slots_nor_stay_for_long():
    settings = ServeSettings(max_in_flight=2, upload_grace_s=0.5, min_upload_rate=2000, upload_read_timeout_s=5)
    with guarded_server(create_app(lambda s: FixedDetector(), settings), settings) as base:
        slow = [_partial_upload(base) for _ in range(4)]  # more than max_in_flight
        time.sleep(0.2)
        good = httpx.post(f"{base}/v1/detect", content=png_bytes(), headers=PNG, timeout=10)
        assert good.status_code == 200, good.text  # the slow bodies were never admitted
        for sock in slow:
            answer = _answer(sock)  # read until the server closes the connection
            assert answer.startswith("HTTP/1.1 408") and "upload too slow" in answer, answer


def test_a_body_that_pauses_too_long_gets_408():
    settings = ServeSettings(upload_read_timeout_s=0.4, min_upload_rate=1, upload_grace_s=60)
    with guarded_server(create_app(lambda s: FixedDetector(), settings), settings) as base:
        answer = _answer(_partial_upload(base, 1000, b"\0" * 500))
    assert answer.startswith("HTTP/1.1 408") and "no pause over 0.4 s" in answer


def test_upload_bytes_in_flight_are_bounded():
    settings = ServeSettings(max_upload_bytes=3_000_000, max_upload_bytes_in_flight=5_000_000)
    with guarded_server(create_app(lambda s: FixedDetector(), settings), settings) as base:
        first = _partial_upload(base, 3_000_000, b"\0" * 2_600_000)  # then stalls, within the grace
        _wait_for(lambda: _bytes_in_flight(base) >= 2_600_000)
        # over the budget well before its end (a body whose last piece crosses the budget is already in)
        refused = httpx.post(f"{base}/v1/detect", content=b"\0" * 2_900_000, headers=PNG, timeout=10)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1", refused.text
        assert "busy receiving other uploads" in refused.json()["detail"]
        slow = [_partial_upload(base, 3_000_000) for _ in range(20)]  # declared, not sent: hold nothing
        time.sleep(0.2)
        assert httpx.post(f"{base}/v1/detect", content=png_bytes(), headers=PNG, timeout=10).status_code == 200
        for sock in slow:
            sock.close()
        first.close()
        time.sleep(0.2)
        assert httpx.post(f"{base}/v1/detect", content=png_bytes(), headers=PNG, timeout=10).status_code == 200


def _bytes_in_flight(base: str) -> int:
    return httpx.get(f"{base}/healthz").json()["upload_bytes_in_flight"]


# -- 3. idle, slow-header and too many connections ----------------------------------------------------------


def test_idle_and_slow_header_connections_are_closed():
    settings = ServeSettings(header_timeout_s=0.5, keep_alive_timeout_s=0.5)
    with guarded_server(create_app(lambda s: FixedDetector(), settings), settings) as base:
        idle = _connect(base)
        assert _closed_within(idle, 3)
        trickle = _connect(base)
        start = time.monotonic()
        with contextlib.suppress(OSError):
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n":
                trickle.send(bytes([byte]))
                time.sleep(0.1)  # a byte at a time keeps uvicorn's keep-alive timer from ever firing
        assert time.monotonic() - start < 3 and _closed_within(trickle, 3)
        kept = _connect(base)  # one answered request, then idle on keep-alive
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        kept.settimeout(5)
        assert kept.recv(65536).startswith(b"HTTP/1.1 200")
        assert _closed_within(kept, 3)


def test_connections_over_the_limit_are_closed_at_once():
    settings = ServeSettings(max_connections=3, header_timeout_s=30)
    with guarded_server(create_app(lambda s: FixedDetector(), settings), settings) as base:
        held = [_connect(base) for _ in range(3)]
        time.sleep(0.2)
        extra = _connect(base)
        assert _closed_within(extra, 2)
        for sock in held:
            sock.close()
        time.sleep(0.2)
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200


# -- 4. a client that goes away mid-upload ---------------------------------------------------------------------


def test_a_disconnect_mid_upload_is_one_info_line(caplog):
    settings = ServeSettings()
    with caplog.at_level(logging.INFO), guarded_server(create_app(lambda s: FixedDetector(), settings), settings) as base:
        sock = _partial_upload(base, 100_000, b"\0" * 1000)
        time.sleep(0.3)
        sock.close()
        _wait_for(lambda: any("went away" in r.getMessage() for r in caplog.records), 5)
        assert httpx.post(f"{base}/v1/detect", content=png_bytes(), headers=PNG).status_code == 200
    gone = [r for r in caplog.records if "went away" in r.getMessage()]
    assert len(gone) == 1 and gone[0].levelno == logging.INFO and "1,000 of 100,000 bytes" in gone[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert "Exception in ASGI application" not in caplog.text and "Traceback" not in caplog.text


# -- 6. API key -------------------------------------------------------------------------------------------------


def test_api_key_is_required_when_set(monkeypatch):
    settings = ServeSettings(api_key="s3cret")
    with TestClient(create_app(lambda s: FixedDetector(), settings)) as client:
        missing = client.post("/v1/detect", content=png_bytes(), headers=PNG)
        wrong = client.post("/v1/detect", content=png_bytes(), headers={**PNG, "X-API-Key": "guess"})
        right = client.post("/v1/detect", content=png_bytes(), headers={**PNG, "X-API-Key": "s3cret"})
        identify = client.post("/v1/identify", content=png_bytes(), headers=PNG)
        health = client.get("/healthz").json()
        spec = client.get("/openapi.json").json()
        page = client.get("/").text
    assert missing.status_code == 401 and "missing API key" in missing.json()["detail"]
    assert wrong.status_code == 401 and "wrong API key" in wrong.json()["detail"]
    assert right.status_code == 200 and identify.status_code == 401
    assert health["api_key_required"] is True and "s3cret" not in str(health)
    assert spec["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key",
        "description": "Needed only when the server was started with --api-key (or ACFD_SERVE_API_KEY).",
    }
    assert 'id="api-key"' in page and "s3cret" not in page
    monkeypatch.setenv("ACFD_SERVE_API_KEY", "from-env")
    assert ServeSettings().api_key.get_secret_value() == "from-env"
    with TestClient(create_app(lambda s: FixedDetector(), ServeSettings())) as client:
        assert client.post("/v1/detect", content=png_bytes(), headers=PNG).status_code == 401


def test_no_key_no_check():
    with TestClient(create_app(lambda s: FixedDetector(), ServeSettings())) as client:
        assert client.post("/v1/detect", content=png_bytes(), headers=PNG).status_code == 200
        assert client.get("/healthz").json()["api_key_required"] is False
        assert 'id="api-key"' not in client.get("/").text


def test_warning_on_a_reachable_host_without_a_key():
    keyed = ServeSettings(api_key="k")
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert exposure_warning(host, ServeSettings()) is None, host
    for host in ("0.0.0.0", "::", "192.168.1.10", "myhost.example"):
        warning = exposure_warning(host, ServeSettings())
        assert warning is not None and "without an API key" in warning and "--api-key" in warning
        assert exposure_warning(host, keyed) is None


def test_cli_warns_and_passes_the_settings(monkeypatch):
    from typer.testing import CliRunner

    from acfd.cli import app
    from acfd.serve import server

    calls: list = []
    monkeypatch.setattr(server, "run", lambda settings, host, port, log_level: calls.append((settings, host, port)))
    monkeypatch.setenv("ACFD_SERVE_MAX_IN_FLIGHT", "7")
    exposed = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--scale", "320", "--header-timeout", "3"])
    keyed = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--api-key", "k"])
    assert exposed.exit_code == 0 and "warning: serving on 0.0.0.0 without an API key" in exposed.output
    assert keyed.exit_code == 0 and "warning" not in keyed.output
    settings, host, _ = calls[0]
    assert (settings.scale, settings.header_timeout_s, settings.max_in_flight, host) == (320, 3.0, 7, "0.0.0.0")
    assert calls[1][0].api_key.get_secret_value() == "k"


# -- A13: one pixel limit ---------------------------------------------------------------------------------------


def test_serve_and_the_image_readers_share_one_pixel_limit():
    import inspect

    from acfd.data.image_io import DEFAULT_MAX_PIXELS, load_image

    assert ServeSettings().max_pixels == DEFAULT_MAX_PIXELS
    assert inspect.signature(load_image).parameters["max_pixels"].default == DEFAULT_MAX_PIXELS
    with TestClient(create_app(lambda s: FixedDetector(), ServeSettings(max_pixels=1000))) as client:
        r = client.post("/v1/detect", content=png_bytes(40, 30), headers=PNG)
    assert r.status_code == 413 and r.json()["detail"] == "upload: too many pixels: 40x30 = 1,200 > limit 1,000 (max_pixels)"
