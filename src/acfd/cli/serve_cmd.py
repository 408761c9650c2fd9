"""``acfd serve``: the HTTP detection service (FastAPI + uvicorn), with the demo page at ``/``."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from acfd.cli.errors import EXIT_USAGE, fail
from acfd.engine.defaults import DEFAULT_LONG_SIDE, DEFAULT_SCORE_THRESH


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0: all)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes, one model each."),
    model: str | None = typer.Option(None, "--model", help="Model name or weights file.", show_default="the shipped model"),
    weights: Path | None = typer.Option(None, "--weights", help="Weights for a model given by name."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1..."),
    scale: int = typer.Option(DEFAULT_LONG_SIDE, "--scale", help="Default test scale (longer side, pixels)."),
    score_thr: float = typer.Option(DEFAULT_SCORE_THRESH, "--score-thr", min=0.0, max=1.0, help="Default score threshold."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", min=0.001, help="Largest upload (MB)."),
    max_megapixels: float = typer.Option(40.0, "--max-megapixels", min=0.001, help="Largest decoded image."),
    timeout: float = typer.Option(30.0, "--timeout", min=0.01, help="Seconds before a request gets 503."),
    max_in_flight: int = typer.Option(32, "--max-in-flight", min=1, help="Requests admitted per worker; more get 429."),
    max_batch: int = typer.Option(8, "--max-batch", min=1, help="Dynamic batching: images per network call (1: off)."),
    batch_wait_ms: float = typer.Option(5.0, "--batch-wait-ms", min=0.0, help="Longest wait to fill a batch."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Torch threads per worker.", show_default="cores / workers"),
    gallery: Path | None = typer.Option(None, "--gallery", help="Recognition gallery: enables POST /v1/identify."),
    recognizer_weights: Path | None = typer.Option(None, "--recognizer-weights", help="Recognition model for /v1/identify."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve face detection over HTTP: POST /v1/detect, POST /v1/identify, GET /healthz, /docs, and a demo page at /."""
    import uvicorn

    from acfd.serve.settings import ENV_VAR, ServeSettings

    for path, what in ((weights, "weights"), (gallery, "gallery"), (recognizer_weights, "recognizer weights")):
        if path is not None and not path.is_file():
            fail(f"{path}: {what} file not found", EXIT_USAGE)
    try:
        settings = ServeSettings(
            model=model,
            weights=None if weights is None else str(weights),
            device=device,
            scale=scale,
            score_thr=score_thr,
            min_score_thr=min(0.05, score_thr),
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            max_pixels=int(max_megapixels * 1_000_000),
            request_timeout_s=timeout,
            max_in_flight=max_in_flight,
            max_batch=max_batch,
            batch_wait_ms=batch_wait_ms,
            threads=threads,
            workers=workers,
            gallery=None if gallery is None else str(gallery),
            recognizer_weights=None if recognizer_weights is None else str(recognizer_weights),
        )
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    os.environ[ENV_VAR] = settings.to_env()  # read by every worker process's app factory
    uvicorn.run(
        "acfd.serve.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        timeout_graceful_shutdown=10,
    )


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``."""
    app.command("serve")(serve)
