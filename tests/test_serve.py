"""``acfd serve``: the FastAPI detection service (in-process with TestClient, and over a live socket)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from acfd import Detector
from acfd.predict.presets import shipped_presets
from acfd.serve import ServeSettings, create_app

SAMPLE = "personai_icartoonface_dettrain_00330.jpg"


@dataclass
class Dets:
    """What the service reads from a detector's result."""

    boxes: np.ndarray
    scores: np.ndarray


class FixedDetector:
    """A stand-in detector: two boxes per image (relative to its size), optionally gated/slow.

    Records the size of every batch it is given.
    """

    def __init__(self, gate: threading.Event | None = None, delay_s: float = 0.0) -> None:
        self.cfg = type("Cfg", (), {"name": "fixed"})()
        self.scales = ()
        self.gate = gate
        self.delay_s = delay_s
        self.batch_sizes: list[int] = []

    def detect_arrays(self, images, batch_size=None):
        self.batch_sizes.append(len(images))
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.delay_s)
        out = []
        for im in images:
            h, w = im.shape[:2]
            boxes = [[0.1 * w, 0.1 * h, 0.3 * w, 0.4 * h], [0.5 * w, 0.2 * h, 0.8 * w, 0.6 * h]]
            out.append(Dets(np.array(boxes), np.array([0.9, 0.3])))
        return out


def png_bytes(width: int = 40, height: int = 30) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(buf, format="PNG")
    return buf.getvalue()


def client_for(detector, **settings) -> TestClient:
    return TestClient(create_app(lambda s: detector, ServeSettings(**settings)))


@pytest.fixture(scope="module")
def tiny_detector() -> Detector:
    """Seeded: unseeded random weights sometimes give near-tied scores whose order differs by float
    noise between the batched server path and a direct call (a flaky box-order comparison)."""
    import torch

    torch.manual_seed(0)
    return Detector("acfd-tiny", scales=("256",), score_thresh=0.05)


def test_detect_matches_the_python_api(tiny_detector, samples_dir):
    """Same boxes as ``Detector(score_thresh=t)`` on the same model (the server filters its floor)."""
    direct = Detector(tiny_detector.model, scales=("256",), score_thresh=0.3)(samples_dir / SAMPLE)
    assert len(direct) > 0
    data = (samples_dir / SAMPLE).read_bytes()
    with client_for(tiny_detector, scale=256) as client:
        multipart = client.post("/v1/detect?score_thr=0.3", files={"file": (SAMPLE, data, "image/jpeg")})
        raw = client.post("/v1/detect?score_thr=0.3", content=data, headers={"content-type": "image/jpeg"})
    assert multipart.status_code == 200, multipart.text
    body = multipart.json()
    assert raw.json()["faces"] == body["faces"]
    assert body["image_size"] == [direct.image_size[1], direct.image_size[0]]
    assert body["model"] == "acfd-tiny" and body["score_thr"] == 0.3 and body["scale"] == 256 and body["ms"] > 0
    np.testing.assert_allclose([f["box"] for f in body["faces"]], direct.boxes, atol=0.01)
    np.testing.assert_allclose([f["score"] for f in body["faces"]], direct.scores, atol=1e-4)


def test_threshold_and_scale_settings():
    with client_for(FixedDetector(), scale=320) as client:
        both = client.post("/v1/detect?score_thr=0.2", content=png_bytes(), headers={"content-type": "image/png"})
        default = client.post("/v1/detect", content=png_bytes(), headers={"content-type": "image/png"})
        scaled = client.post("/v1/detect?scale=512", content=png_bytes(), headers={"content-type": "image/png"})
        for query, needle in (("score_thr=1.5", "less than or equal"), ("scale=5", "greater than"), ("score_thr=0.01", "floor"),
                              ("scale=abc", "integer")):
            bad = client.post(f"/v1/detect?{query}", content=png_bytes(), headers={"content-type": "image/png"})
            assert bad.status_code == 422 and needle in json.dumps(bad.json()), (query, bad.text)
    assert [f["score"] for f in both.json()["faces"]] == [0.9, 0.3]
    assert [f["score"] for f in default.json()["faces"]] == [0.9]  # the detector's default threshold (0.5)
    interactive = shipped_presets()["interactive"]  # the shipped detector's own settings
    assert ServeSettings().score_thr == interactive.score_thresh
    assert (str(ServeSettings().scale),) == tuple(interactive.scales)
    assert default.json()["faces"][0]["box"] == [4.0, 3.0, 12.0, 12.0]  # pixels of the 40x30 upload
    assert scaled.json()["scale"] == 512 and default.json()["scale"] == 320


@pytest.mark.parametrize(
    ("content", "ctype", "status", "needle"),
    [
        (b"", "image/png", 400, "empty"),
        (b"just some text", "image/png", 415, "not an image"),
        (png_bytes()[:60], "image/png", 422, "truncated or corrupt"),
        (png_bytes(), "text/plain", 415, "unsupported content type"),
        (png_bytes(), None, 415, "unsupported content type"),
        (png_bytes(300, 300), "image/png", 413, "too many pixels"),
        (b"\x89PNG" + b"\0" * 6000, "image/png", 413, "larger than the limit"),
    ],
)
def test_bad_uploads_get_4xx_json_and_the_server_goes_on(content, ctype, status, needle):
    with client_for(FixedDetector(), max_pixels=50_000, max_upload_bytes=5000) as client:
        headers = {"content-type": ctype} if ctype else {}
        bad = client.post("/v1/detect", content=content, headers=headers)
        good = client.post("/v1/detect", content=png_bytes(), headers={"content-type": "image/png"})
    assert bad.status_code == status, bad.text
    assert bad.headers["content-type"] == "application/json" and needle in bad.json()["detail"]
    assert good.status_code == 200


def test_multipart_errors_and_chunked_body_limit():
    with client_for(FixedDetector(), max_upload_bytes=5000) as client:
        no_file = client.post("/v1/detect", data={"other": "x"}, files={"nofile": ("a.txt", b"x", "text/plain")})
        big_part = client.post("/v1/detect", files={"file": ("big.png", b"\0" * 6000, "image/png")})
        chunked = client.post(
            "/v1/detect", content=iter([b"\0" * 3000, b"\0" * 3000]), headers={"content-type": "image/png"}
        )
        ok = client.post("/v1/detect", files={"file": ("a.png", png_bytes(), "image/png")})
    assert no_file.status_code == 422 and "field 'file'" in no_file.json()["detail"]
    assert big_part.status_code == 413 and chunked.status_code == 413, (big_part.text, chunked.text)
    assert ok.status_code == 200


def _post_in_thread(url: str, results: list, **kwargs) -> threading.Thread:
    def post() -> None:
        results.append(httpx.post(url, timeout=20, **kwargs))

    thread = threading.Thread(target=post)
    thread.start()
    return thread


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_full_queue_gets_429_with_retry_after(live_server):
    gate = threading.Event()
    app = create_app(lambda s: FixedDetector(gate), ServeSettings(max_in_flight=2))
    base = live_server(app)
    health = lambda: httpx.get(f"{base}/healthz").json()  # noqa: E731
    results: list = []
    headers = {"content-type": "image/png"}
    threads = [_post_in_thread(f"{base}/v1/detect", results, content=png_bytes(), headers=headers) for _ in range(2)]
    _wait_for(lambda: health()["in_flight"] == 2)
    refused = httpx.post(f"{base}/v1/detect", content=png_bytes(), headers=headers)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "busy" in refused.json()["detail"]
    gate.set()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200, 200]
    assert health()["rejected"] == 1 and health()["in_flight"] == 0


def test_concurrent_requests_are_batched_and_answered_each_with_its_own_image(live_server):
    gate = threading.Event()
    detector = FixedDetector(gate)
    base = live_server(create_app(lambda s: detector, ServeSettings(max_batch=8, batch_wait_ms=200)))
    results: list = []
    sizes = [(40, 30), (44, 30), (48, 30), (52, 30)]
    first = _post_in_thread(f"{base}/v1/detect", results, content=png_bytes(*sizes[0]), headers={"content-type": "image/png"})
    _wait_for(lambda: detector.batch_sizes == [1])  # the first request is on the model, blocked
    rest = [
        _post_in_thread(f"{base}/v1/detect", results, content=png_bytes(*s), headers={"content-type": "image/png"})
        for s in sizes[1:]
    ]
    _wait_for(lambda: httpx.get(f"{base}/healthz").json()["queued"] == 3)
    gate.set()
    for t in [first, *rest]:
        t.join()
    assert detector.batch_sizes == [1, 3]
    assert sorted(r.json()["image_size"][0] for r in results) == [40, 44, 48, 52]
    for r in results:
        w = r.json()["image_size"][0]
        assert r.json()["faces"][0]["box"][0] == pytest.approx(0.1 * w, abs=0.01)


def test_slow_request_times_out_with_503_and_the_server_recovers():
    detector = FixedDetector(delay_s=0.6)
    with client_for(detector, request_timeout_s=0.2) as client:
        slow = client.post("/v1/detect", content=png_bytes(), headers={"content-type": "image/png"})
        assert slow.status_code == 503 and "within 0.2 s" in slow.json()["detail"] and "retry-after" in slow.headers
        detector.delay_s = 0.0
        time.sleep(0.7)  # the abandoned batch finishes
        assert client.post("/v1/detect", content=png_bytes(), headers={"content-type": "image/png"}).status_code == 200


def test_health_docs_and_demo_page():
    with client_for(FixedDetector()) as client:
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["model"] == "fixed" and health["identify"] is False
        assert client.get("/docs").status_code == 200
        spec = client.get("/openapi.json").json()
        assert {"/v1/detect", "/v1/identify", "/healthz"} <= set(spec["paths"])
        assert "multipart/form-data" in spec["paths"]["/v1/detect"]["post"]["requestBody"]["content"]
        page = client.get("/")
        assert page.status_code == 200 and "/static/demo.js" in page.text
        assert "http://" not in page.text and "https://" not in page.text  # no CDN
        for asset in ("demo.js", "demo.css"):
            assert client.get(f"/static/{asset}").status_code == 200
        assert client.get("/static/index.html").status_code == 404  # only the rendered page, at /
        no_gallery = client.post("/v1/identify", content=png_bytes(), headers={"content-type": "image/png"})
        assert no_gallery.status_code == 501 and "--gallery" in no_gallery.json()["detail"]


def test_demo_page_starts_at_the_servers_threshold():
    with client_for(FixedDetector()) as client:
        assert f'value="{shipped_presets()["interactive"].score_thresh:.2f}"' in client.get("/").text
    with client_for(FixedDetector(), score_thr=0.3, min_score_thr=0.1) as client:
        page = client.get("/").text
        assert 'value="0.30"' in page and 'min="0.1"' in page and "{{" not in page


def test_identify_names_faces_from_the_gallery(tmp_path):
    from acfd.recognition import Gallery, PixelEmbedder, crop_face
    from acfd.serve.identify import Identifier

    image = np.zeros((30, 40, 3), np.uint8)
    image[:, :20] = (250, 10, 10)
    image[:, 20:] = (10, 10, 250)
    embedder = PixelEmbedder(8)
    gallery = Gallery.create(tmp_path / "g.faiss", embedder.embedding_dim, embedder.model_id)
    face_box = [4.0, 3.0, 12.0, 12.0]  # FixedDetector's first box on a 40x30 image
    gallery.add(["red"], embedder.embed([crop_face(image, face_box, embedder.enlarge_rate, embedder.input_size)]))
    gallery.add(["striped"], embedder.embed([np.tile(np.arange(32, dtype=np.uint8)[:, None, None] * 8, (1, 32, 3))]))
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    app = create_app(lambda s: FixedDetector(), ServeSettings(), identifier_factory=lambda s: Identifier(embedder, gallery))
    with TestClient(app) as client:
        r = client.post("/v1/identify?k=2", files={"file": ("a.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200, r.text
    face = r.json()["faces"][0]
    assert face["identity"] == "red" and face["similarity"] > 0.99
    assert [c["name"] for c in face["candidates"]] == ["red", "striped"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_cli_serves_with_two_worker_processes(samples_dir):
    """``acfd serve --workers 2``: two processes, each with its own model, both answering."""
    port = _free_port()
    cmd = [sys.executable, "-m", "acfd", "serve", "--port", str(port), "--workers", "2", "--model", "acfd-tiny",
           "--scale", "256", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:
            try:
                with httpx.Client() as c:  # a new connection each time: the kernel spreads them over workers
                    pids.add(c.get(f"{base}/healthz", timeout=2).json()["pid"])
            except httpx.TransportError:
                time.sleep(0.3)
        assert len(pids) == 2, f"saw worker pids {pids}"
        data = (samples_dir / SAMPLE).read_bytes()
        r = httpx.post(f"{base}/v1/detect", content=data, headers={"content-type": "image/jpeg"}, timeout=30)
        assert r.status_code == 200 and r.json()["image_size"] == [848, 472]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_cli_rejects_bad_settings_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from acfd.cli import app

    result = CliRunner().invoke(app, ["serve", "--scale", "5"])
    assert result.exit_code == 2 and "error: scale 5 is outside" in result.output
    result = CliRunner().invoke(app, ["serve", "--gallery", str(tmp_path / "none.faiss")])
    assert result.exit_code == 2 and "gallery file not found" in result.output
