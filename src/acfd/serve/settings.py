"""Settings of the detection service: one ``pydantic-settings`` model.

Every field can be set by keyword (the CLI and the tests), or by an environment variable named
``ACFD_SERVE_<FIELD>`` (``ACFD_SERVE_API_KEY``, ``ACFD_SERVE_MAX_IN_FLIGHT``...), which is also how
uvicorn's worker processes (``--workers N``) get the settings the CLI was given
(:meth:`ServeSettings.to_env`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from acfd.data.image_io import DEFAULT_MAX_PIXELS
from acfd.predict.presets import shipped_presets
from acfd.predict.scales import parse_scales
from acfd.utils import default_threads

ENV_PREFIX = "ACFD_SERVE_"


def interactive_defaults() -> tuple[int, float]:
    """The shipped detector's interactive test scale (its longer side) and score threshold."""
    preset = shipped_presets()["interactive"]
    first = parse_scales(preset.scales)[0]
    return int(first.long_side or max(first.height or 0, first.width or 0)), float(preset.score_thresh)


DEFAULT_SCALE, DEFAULT_SCORE_THR = interactive_defaults()


class ServeSettings(BaseSettings):
    """What the service loads and the limits it enforces (docs/SERVING.md explains each limit)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    # -- models --------------------------------------------------------------------------------
    model: str | None = Field(None, description="detector name or weights file (None: the shipped model)")
    weights: str | None = Field(None, description="weights for a model given by name")
    device: str = Field("cpu", description="cpu, cuda, cuda:1...")
    gallery: str | None = Field(None, description="recognition gallery file; enables POST /v1/identify")
    recognizer_weights: str | None = Field(None, description="recognition model for /v1/identify (None: shipped)")

    # -- detection defaults --------------------------------------------------------------------
    scale: int = Field(DEFAULT_SCALE, description="default test scale (longer side, pixels)")
    min_scale: int = 128
    max_scale: int = 1600
    score_thr: float = Field(DEFAULT_SCORE_THR, description="default score threshold of a request")
    min_score_thr: float = Field(
        0.05,
        description="the detector runs at this floor and each request keeps the faces above its own "
        "threshold (greedy NMS keeps the same boxes above any threshold, so requests with different "
        "thresholds share a batch)",
    )

    # -- memory and time per request -----------------------------------------------------------
    max_upload_bytes: int = Field(20 * 1024 * 1024, description="larger bodies get 413")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, description="larger decoded images get 413 (from the header)")
    max_pixels_in_flight: int | None = Field(
        None, description="decoded pixels held at once (decoding, queued, running); None: max_pixels"
    )
    max_upload_bytes_in_flight: int | None = Field(
        None, description="bytes held by the bodies being received, as they arrive; None: 8 x max_upload_bytes"
    )
    upload_read_timeout_s: float = Field(10.0, description="longest pause in a body (408)")
    min_upload_rate: float = Field(8192.0, description="least average upload speed after the grace, bytes/s (408)")
    upload_grace_s: float = Field(5.0, description="time a body may take before min_upload_rate applies")
    request_timeout_s: float = Field(30.0, description="from a complete body to the answer, else 503")
    max_in_flight: int = Field(32, description="requests with their body in, admitted at once (429 beyond)")

    # -- connections (uvicorn) -------------------------------------------------------------------
    header_timeout_s: float = Field(10.0, description="a connection must send complete request headers within this")
    keep_alive_timeout_s: float = Field(5.0, description="an idle keep-alive connection is closed after this")
    max_connections: int = Field(256, description="open connections per worker; more are closed at once")

    # -- batching and processes ------------------------------------------------------------------
    max_batch: int = Field(8, description="dynamic batching: most queued images per network call (1: off)")
    batch_wait_ms: float = Field(5.0, description="longest wait for more requests to fill a batch")
    threads: int | None = Field(None, description="CPU threads of the networks per worker, ONNX Runtime and torch (None: cores / workers)")
    precision: Literal["auto", "float32", "int8"] = Field(
        "auto", description="the detector network's numbers on the CPU (auto: int8 on CPUs with int8 dot products)")
    workers: int = Field(1, description="worker processes, one model each")

    # -- access ------------------------------------------------------------------------------------
    api_key: SecretStr | None = Field(None, description="if set, POST /v1/* need the header X-API-Key with it")

    @model_validator(mode="after")
    def _check(self) -> ServeSettings:
        if not self.min_scale <= self.scale <= self.max_scale:
            raise ValueError(f"scale {self.scale} is outside [{self.min_scale}, {self.max_scale}]")
        if not 0.0 <= self.min_score_thr <= self.score_thr <= 1.0:
            raise ValueError(f"need 0 <= min_score_thr <= score_thr <= 1, got {self.min_score_thr}, {self.score_thr}")
        for name in ("max_upload_bytes", "max_pixels", "max_in_flight", "max_batch", "workers", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("request_timeout_s", "upload_read_timeout_s", "min_upload_rate", "header_timeout_s",
                     "keep_alive_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.pixel_budget < self.max_pixels:
            raise ValueError(
                f"max_pixels_in_flight ({self.pixel_budget:,}) must be at least max_pixels ({self.max_pixels:,}): "
                "else the largest image allowed could never be decoded"
            )
        if self.api_key is not None and not self.api_key.get_secret_value():
            raise ValueError("api_key is empty")
        return self

    @property
    def pixel_budget(self) -> int:
        """Decoded pixels held at once by one worker."""
        return self.max_pixels if self.max_pixels_in_flight is None else self.max_pixels_in_flight

    @property
    def upload_budget(self) -> int:
        """Body bytes being received at once by one worker."""
        if self.max_upload_bytes_in_flight is not None:
            return self.max_upload_bytes_in_flight
        return 8 * self.max_upload_bytes

    @property
    def torch_threads(self) -> int:
        """CPU threads for one worker's inference (ONNX Runtime and torch): ``threads``, else the
        cores this process may use shared among the workers."""
        return self.threads or max(1, default_threads() // self.workers)

    def replace(self, **changes: Any) -> ServeSettings:
        """A copy with ``changes`` (validated)."""
        return type(self)(**{**self.model_dump(), "api_key": self.api_key, **changes})

    def to_env(self) -> dict[str, str]:
        """``ACFD_SERVE_*`` variables that give these settings to a process reading the environment."""
        env = {}
        for name, value in self.model_dump().items():
            if name == "api_key":
                value = None if self.api_key is None else self.api_key.get_secret_value()
            if value is not None:
                env[ENV_PREFIX + name.upper()] = str(value)
        return env

    @classmethod
    def from_env(cls) -> ServeSettings:
        """The settings in the ``ACFD_SERVE_*`` environment variables (defaults for the others)."""
        return cls()


def settings_error(exc: ValidationError) -> str:
    """One line for a settings error (the first problem, without pydantic's decoration)."""
    first = exc.errors()[0]
    message = str(first.get("msg", exc)).removeprefix("Value error, ")
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {message}" if where else message
