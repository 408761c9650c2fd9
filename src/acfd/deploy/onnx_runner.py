"""Run an exported ACFD network with ONNX Runtime.

:class:`OnnxRunner` has the raw-tensor contract of :meth:`ACFD.forward` on NumPy arrays, which is
what ``Detector(backend=...)`` takes; ``Detector("model.onnx")`` runs an exported file through it
(:class:`acfd.predict.modelfile.ModelFile` reads the model config and the rest from its metadata).
:func:`check_onnx` compares an export with the PyTorch network it came from.

Example::

    from acfd import Detector

    det = Detector("acfd-n.onnx", scales="640")
    faces = det("page.png")
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from acfd.config import ModelConfig, model_config_from_dict
from acfd.utils import ort_session_options

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn


#: The graph's input and outputs (the ``ACFD.forward`` contract), written by :func:`acfd.deploy.export.export_onnx`.
INPUT_NAME = "images"
OUTPUT_NAMES = ("cls_logits", "box_deltas")
#: ``metadata_props`` keys written by :func:`acfd.deploy.export.export_onnx`.
META_MODEL = "model"
META_CONFIG = "config"
#: ``metadata_props`` key of a quantized graph (:func:`acfd.deploy.quantize.quantize_onnx`): JSON
#: ``{"dtype": "int8", "format": "QDQ", ...}``.
META_QUANTIZATION = "quantization"


def _onnxruntime() -> Any:
    import onnxruntime  # optional: the detector falls back to PyTorch without it

    return onnxruntime


def default_providers() -> list[str]:
    """``["CUDAExecutionProvider", "CPUExecutionProvider"]`` when ONNX Runtime has CUDA, else CPU."""
    available = _onnxruntime().get_available_providers()
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
        ort = _onnxruntime()
        self.num_threads = num_threads
        self.requested_providers = providers
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: ONNX model not found")
        options = ort_session_options(num_threads)
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

    def with_threads(self, num_threads: int) -> OnnxRunner:
        """A new session of the same graph and providers with ``num_threads`` intra-op threads."""
        return type(self)(self.path, self.requested_providers, num_threads)

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
    def precision(self) -> str:
        """``"int8"`` for a quantized graph, else the input's float type (``"float32"``, ``"float16"``)."""
        if META_QUANTIZATION in self.metadata:
            return "int8"
        return "float16" if np.dtype(self.input_dtype) == np.float16 else "float32"

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really uses."""
        return list(self.session.get_providers())

    def model_config(self) -> ModelConfig | None:
        """The stored config as a :class:`~acfd.config.ModelConfig`, or ``None``."""
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


def check_onnx(
    model: nn.Module,
    path: str | Path,
    input_shape: tuple[int, ...] = (1, 3, 640, 640),
    seed: int = 0,
) -> dict[str, float]:
    """Largest absolute difference between ``model`` (PyTorch, float32) and the ONNX file.

    Args:
        model: the network that was exported.
        path: the ``.onnx`` file.
        input_shape: ``(B, 3, H, W)`` of the random normalised test input.
        seed: random seed of the input.

    Returns:
        ``{"cls_logits": max_abs_diff, "box_deltas": max_abs_diff, "scale": max_abs_output}``.
    """
    import torch  # the export side: running a graph needs no torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*input_shape, generator=gen)
    net = copy.deepcopy(model).float().cpu().eval()
    with torch.no_grad():
        ref = [t.float().numpy() for t in net(x)]
    got = OnnxRunner(path, providers=["CPUExecutionProvider"])(x.numpy())
    out = {name: float(abs(g - r).max()) for name, g, r in zip(OUTPUT_NAMES, got, ref)}
    out["scale"] = float(max(abs(r).max() for r in ref))
    return out


__all__ = ["OnnxRunner", "check_onnx", "default_providers"]
