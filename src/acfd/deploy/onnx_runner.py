"""Run an exported ACFD network with ONNX Runtime, alone or inside a :class:`Detector`.

:class:`OnnxRunner` has the raw-tensor contract of :meth:`ACFD.forward` on NumPy arrays, which is
what ``Detector(backend=...)`` takes; :func:`load_onnx_detector` wires the two together from the
``.onnx`` file alone (the model config is read from its metadata).

Example::

    from acfd.deploy.onnx_runner import load_onnx_detector

    det = load_onnx_detector("acfd-s.onnx", scales="640")
    faces = det("page.png")
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from acfd.deploy.export import DEFAULT_OPSET, META_CONFIG, META_MODEL

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from acfd.config import ModelConfig
    from acfd.engine.infer import Detector

logger = logging.getLogger(__name__)


def default_providers() -> list[str]:
    """``["CUDAExecutionProvider", "CPUExecutionProvider"]`` when ONNX Runtime has CUDA, else CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider",) if p in available]
    return providers + ["CPUExecutionProvider"]


class OnnxRunner:
    """An ONNX Runtime session with the ``ACFD.forward`` contract on NumPy arrays.

    Args:
        path: the ``.onnx`` file (from :func:`acfd.deploy.export.export_onnx`).
        providers: ONNX Runtime execution providers; ``None`` is CUDA when available, else CPU.
        num_threads: intra-op threads; ``None`` lets ONNX Runtime decide (one per core).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not a readable ONNX model.
    """

    def __init__(
        self,
        path: str | Path,
        providers: list[str] | None = None,
        num_threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: ONNX model not found")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only (fp16 graphs warn about constant folding)
        # ORT's idle workers spin after each run and take the cores from the post-processing that
        # follows in PyTorch (decode + NMS of up to 1,000 boxes at the protocol's score 0.08: 12-15 ms
        # -> 1.7 ms per 1080p frame on 2 cores, network time unchanged; docs/MODEL_CARD.md, Speed).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if num_threads is not None:
            if num_threads < 1:
                raise ValueError(f"num_threads must be >= 1, got {num_threads}")
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=providers or default_providers()
            )
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidProtobuf / InvalidGraph
            raise ValueError(f"{self.path}: cannot load ONNX model ({exc})") from exc
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{self.path}: expected one input (images), the model has {len(inputs)}")
        self.input_name: str = inputs[0].name
        self.input_dtype = np.float16 if "float16" in inputs[0].type else np.float32
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]
        if len(self.output_names) < 2:
            raise ValueError(
                f"{self.path}: expected outputs (cls_logits, box_deltas), got {self.output_names}"
            )

    @property
    def model_name(self) -> str | None:
        """The model name stored at export (``None`` for a file exported elsewhere)."""
        return self.metadata.get(META_MODEL)

    @property
    def config(self) -> dict[str, Any] | None:
        """The model config dict stored at export, or ``None``."""
        raw = self.metadata.get(META_CONFIG)
        return json.loads(raw) if raw else None

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really uses."""
        return list(self.session.get_providers())

    def model_config(self) -> ModelConfig | None:
        """The stored config as a :class:`~acfd.config.ModelConfig`, or ``None``."""
        from acfd.config import model_config_from_dict

        cfg = self.config
        return None if cfg is None else model_config_from_dict(cfg)

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the network.

        Args:
            images: ``(B, 3, H, W)`` float normalised images (any H, W for a dynamic export).

        Returns:
            ``cls_logits (B, A)`` and ``box_deltas (B, A, 4)``, float32.

        Raises:
            ValueError: ``images`` has the wrong shape.
        """
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {images.shape}")
        feed = np.ascontiguousarray(images, dtype=self.input_dtype)
        cls_logits, box_deltas = self.session.run(self.output_names[:2], {self.input_name: feed})
        return cls_logits.astype(np.float32, copy=False), box_deltas.astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"OnnxRunner({str(self.path)!r}, model={self.model_name!r}, providers={self.providers})"


def load_onnx_detector(
    path: str | Path,
    providers: list[str] | None = None,
    num_threads: int | None = None,
    **detector_kwargs: Any,
) -> Detector:
    """A :class:`~acfd.engine.infer.Detector` whose network runs in ONNX Runtime.

    Anchors and the box coder come from the config stored in the file; the score calibration from
    its metadata and the verifier beside it as for ``Detector(path)``. The Detector still builds
    the (randomly initialised) PyTorch module of that config for them, which costs its memory and
    build time but never runs.

    Args:
        path: the ``.onnx`` file.
        providers: as for :class:`OnnxRunner`.
        num_threads: as for :class:`OnnxRunner`.
        **detector_kwargs: other :class:`Detector` arguments (``scales``, ``score_thresh``,
            ``device``...), not ``model``/``weights``/``backend``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds no acfd model config (nor a known model name).
    """
    from acfd.engine.infer import Detector
    from acfd.models import ACFD, list_models

    for key in ("model", "weights", "backend"):
        if key in detector_kwargs:
            raise ValueError(f"load_onnx_detector() sets {key}= itself; do not pass it")
    runner = OnnxRunner(path, providers=providers, num_threads=num_threads)
    cfg = runner.model_config()
    if cfg is not None:
        model: Any = ACFD(cfg)
    elif runner.model_name in list_models():
        model = runner.model_name
    else:
        raise ValueError(
            f"{runner.path}: no acfd model config in the ONNX metadata (export it with "
            "acfd.deploy.export.export_onnx)"
        )
    # what Detector(path) finds in the file itself: the score calibration and the verifier beside it
    from acfd.engine.infer import _exported_extras, _resolve_verifier

    stored, onnx_file, onnx_source = _exported_extras(runner)
    calibration = detector_kwargs.pop("calibration", "auto")
    if isinstance(calibration, str) and calibration == "auto":
        calibration = stored
    verifier = detector_kwargs.pop("verifier", "auto")
    if isinstance(verifier, str) and verifier == "auto":
        verifier = _resolve_verifier("auto", None, calibration is not None, onnx_file, onnx_source)
    return Detector(model=model, backend=runner, calibration=calibration, verifier=verifier, **detector_kwargs)


def cache_dir() -> Path:
    """Where exported networks are cached: ``$ACFD_CACHE_DIR``, else ``$XDG_CACHE_HOME/acfd``,
    else ``~/.cache/acfd``."""
    env = os.environ.get("ACFD_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "acfd"


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _state_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cached_onnx(model: nn.Module, weights_file: str | os.PathLike[str] | None = None,
                opset: int = DEFAULT_OPSET) -> Path:
    """The fused dynamic-size ONNX export of ``model``, made once and kept in :func:`cache_dir`.

    The file name holds the model name, the SHA-256 of ``weights_file`` (the weights the model
    was loaded from; without it, of the state dict), the opset and the acfd version, so a new
    weights file or a new release exports again. The export is written atomically, so two
    processes racing for it both end with a whole file.

    Args:
        model: the loaded PyTorch network (left untouched).
        weights_file: the file ``model``'s weights came from (hashing it is cheaper).
        opset: ONNX opset.
    """
    from acfd.deploy.export import _package_version, export_onnx

    digest = _file_digest(Path(weights_file)) if weights_file is not None else _state_digest(model)
    name = getattr(getattr(model, "cfg", None), "name", "model")
    path = cache_dir() / f"{name}-{digest[:24]}-opset{opset}-v{_package_version()}.onnx"
    if not path.is_file():
        logger.info("exporting %s to ONNX once (cached as %s)", name, path)
        export_onnx(model, path, opset=opset, dynamic=True, fuse=True)
    return path


__all__ = ["OnnxRunner", "cache_dir", "cached_onnx", "default_providers", "load_onnx_detector"]
