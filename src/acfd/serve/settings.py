"""Settings of the detection service, as data (one frozen dataclass; the CLI and the tests fill it).

The settings travel to uvicorn's worker processes as JSON in ``$ACFD_SERVE_SETTINGS``
(:meth:`ServeSettings.to_env` / :meth:`ServeSettings.from_env`), so each worker builds the same app.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

from acfd.engine.defaults import DEFAULT_LONG_SIDE, DEFAULT_SCORE_THRESH

ENV_VAR = "ACFD_SERVE_SETTINGS"


@dataclass(frozen=True)
class ServeSettings:
    """What the service loads and the limits it enforces.

    Args:
        model: detector name or weights file (``None``: the shipped model).
        weights: weights for a model given by name.
        device: ``cpu``, ``cuda``...
        scale: default test scale (longer side in pixels); a request may ask for another in
            ``[min_scale, max_scale]``.
        score_thr: default score threshold of a request.
        min_score_thr: the detector runs at this floor and each request filters above its own
            threshold (greedy NMS keeps the same boxes above any threshold, so filtering after
            NMS equals running at that threshold, and requests with different thresholds batch).
        max_upload_bytes: larger request bodies get 413 before they are read.
        max_pixels: larger decoded images get 413 (checked from the header, before decoding).
        request_timeout_s: a request not answered within this gets 503 with Retry-After.
        max_in_flight: requests admitted at once per worker (reading, decoding, queued or
            running); one more gets 429 with Retry-After. Bounds memory.
        max_batch: dynamic batching: at most this many queued images per network call
            (1 turns batching off).
        batch_wait_ms: how long the inference thread waits for more requests to fill a batch.
        threads: torch CPU threads per worker (``None``: CPU cores / workers).
        workers: worker processes (one model each).
        gallery: a recognition gallery file; enables ``POST /v1/identify``.
        recognizer_weights: the recognition model for ``/v1/identify`` (``None``: shipped one).
    """

    model: str | None = None
    weights: str | None = None
    device: str = "cpu"
    scale: int = DEFAULT_LONG_SIDE
    min_scale: int = 128
    max_scale: int = 1600
    score_thr: float = DEFAULT_SCORE_THRESH
    min_score_thr: float = 0.05
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    request_timeout_s: float = 30.0
    max_in_flight: int = 32
    max_batch: int = 8
    batch_wait_ms: float = 5.0
    threads: int | None = None
    workers: int = 1
    gallery: str | None = None
    recognizer_weights: str | None = None

    def __post_init__(self) -> None:
        if not self.min_scale <= self.scale <= self.max_scale:
            raise ValueError(f"scale {self.scale} is outside [{self.min_scale}, {self.max_scale}]")
        if not 0.0 <= self.min_score_thr <= self.score_thr <= 1.0:
            raise ValueError(f"need 0 <= min_score_thr <= score_thr <= 1, got {self.min_score_thr}, {self.score_thr}")
        for name in ("max_upload_bytes", "max_pixels", "max_in_flight", "max_batch", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be > 0, got {self.request_timeout_s}")

    @property
    def torch_threads(self) -> int:
        """Torch threads for one worker's inference."""
        return self.threads or max(1, (os.cpu_count() or 1) // self.workers)

    def replace(self, **changes: Any) -> ServeSettings:
        return dataclasses.replace(self, **changes)

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls) -> ServeSettings:
        """The settings in ``$ACFD_SERVE_SETTINGS`` (defaults when it is not set)."""
        raw = os.environ.get(ENV_VAR)
        return cls(**json.loads(raw)) if raw else cls()
