"""``acfd serve``: the HTTP detection service (FastAPI + uvicorn), with the demo page at ``/``.

Every option left out keeps the value of its ``ACFD_SERVE_*`` environment variable, or the default
(:class:`acfd.serve.settings.ServeSettings`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from acfd.cli.errors import EXIT_USAGE, fail
from acfd.cli.options import Precision


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0: all)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Worker processes, one model each.", show_default="1"),
    model: str | None = typer.Option(None, "--model", help="Model name or weights file.", show_default="the shipped model"),
    weights: Path | None = typer.Option(None, "--weights", help="Weights for a model given by name."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1...", show_default="cpu"),
    scale: int | None = typer.Option(None, "--scale", help="Default test scale (longer side, pixels).", show_default="the model's"),
    score_thr: float | None = typer.Option(None, "--score-thr", min=0.0, max=1.0, help="Default score threshold.", show_default="the model's"),
    api_key: str | None = typer.Option(None, "--api-key", help="Require this key in the X-API-Key header of POST /v1/* (or ACFD_SERVE_API_KEY).", show_default="none"),
    max_upload_mb: float | None = typer.Option(None, "--max-upload-mb", min=0.001, help="Largest upload (MB).", show_default="20"),
    max_megapixels: float | None = typer.Option(None, "--max-megapixels", min=0.001, help="Largest decoded image (megapixels).", show_default="1/16 of memory at 8 bytes a pixel"),
    max_megapixels_in_flight: float | None = typer.Option(None, "--max-megapixels-in-flight", min=0.001, help="Decoded pixels held at once per worker.", show_default="--max-megapixels"),
    timeout: float | None = typer.Option(None, "--timeout", min=0.01, help="Seconds from a complete upload to the answer, else 503.", show_default="30"),
    upload_timeout: float | None = typer.Option(None, "--upload-timeout", min=0.01, help="Longest pause in an upload, seconds (408).", show_default="10"),
    min_upload_kbps: float | None = typer.Option(None, "--min-upload-kbps", min=0.001, help="Least average upload speed after 5 s, KB/s (408).", show_default="8"),
    header_timeout: float | None = typer.Option(None, "--header-timeout", min=0.01, help="Seconds a connection has to send complete request headers.", show_default="10"),
    keep_alive_timeout: float | None = typer.Option(None, "--keep-alive-timeout", min=0.01, help="Seconds an idle keep-alive connection stays open.", show_default="5"),
    max_connections: int | None = typer.Option(None, "--max-connections", min=1, help="Open connections per worker; more are closed.", show_default="256"),
    max_in_flight: int | None = typer.Option(None, "--max-in-flight", min=1, help="Uploaded requests admitted per worker; more get 429.", show_default="32"),
    max_batch: int | None = typer.Option(None, "--max-batch", min=1, help="Dynamic batching: images per network call (1: off).", show_default="8"),
    batch_wait_ms: float | None = typer.Option(None, "--batch-wait-ms", min=0.0, help="Longest wait to fill a batch.", show_default="5"),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads of the networks per worker (ONNX Runtime and torch).", show_default="cores / workers"),
    precision: Precision | None = typer.Option(None, "--precision", help="The detector network's numbers on the CPU: int8, float32, or auto (int8 on CPUs with int8 dot products).", show_default="auto"),
    gallery: Path | None = typer.Option(None, "--gallery", help="Recognition gallery: enables POST /v1/identify."),
    recognizer_weights: Path | None = typer.Option(None, "--recognizer-weights", help="Recognition model for /v1/identify."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve face detection over HTTP: POST /v1/detect, POST /v1/identify, GET /healthz, /docs, and a demo page at /."""
    from pydantic import ValidationError

    from acfd.serve import server
    from acfd.serve.settings import ServeSettings, settings_error

    for path, what in ((weights, "weights"), (gallery, "gallery"), (recognizer_weights, "recognizer weights")):
        if path is not None and not path.is_file():
            fail(f"{path}: {what} file not found", EXIT_USAGE)
    given: dict[str, Any] = {
        "workers": workers, "model": model, "device": device, "scale": scale, "score_thr": score_thr,
        "api_key": api_key, "request_timeout_s": timeout, "upload_read_timeout_s": upload_timeout,
        "header_timeout_s": header_timeout, "keep_alive_timeout_s": keep_alive_timeout,
        "max_connections": max_connections, "max_in_flight": max_in_flight, "max_batch": max_batch,
        "batch_wait_ms": batch_wait_ms, "threads": threads,
        "precision": None if precision is None else precision.value,
        "weights": None if weights is None else str(weights),
        "gallery": None if gallery is None else str(gallery),
        "recognizer_weights": None if recognizer_weights is None else str(recognizer_weights),
        "max_upload_bytes": None if max_upload_mb is None else int(max_upload_mb * 1024 * 1024),
        "max_pixels": None if max_megapixels is None else int(max_megapixels * 1_000_000),
        "max_pixels_in_flight": None if max_megapixels_in_flight is None else int(max_megapixels_in_flight * 1_000_000),
        "min_upload_rate": None if min_upload_kbps is None else min_upload_kbps * 1024,
    }
    if score_thr is not None:
        given["min_score_thr"] = min(0.05, score_thr)
    try:
        settings = ServeSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        fail(settings_error(exc), EXIT_USAGE)
    warning = server.exposure_warning(host, settings)
    if warning is not None:
        typer.echo(f"warning: {warning}", err=True)
    server.run(settings, host, port, log_level)


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``."""
    app.command("serve")(serve)
