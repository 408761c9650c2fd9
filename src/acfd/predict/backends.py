"""Which engine runs a detector's networks: PyTorch, ONNX Runtime, or a callable given by the user.

``backend="auto"`` (the default) runs the detector on ONNX Runtime on the CPU when it is installed
and the weights come from a file (2-3x faster than PyTorch eager there): the fused network is
exported once and cached under the file's digest (:meth:`ModelFile.cached_onnx`). The verifier
then runs on ONNX Runtime too. Anything else runs on PyTorch.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from acfd.config import ModelConfig, model_config_from_dict
from acfd.deploy.export import cached_onnx
from acfd.deploy.onnx_runner import OnnxRunner
from acfd.detection.verifier import BoxVerifier
from acfd.models.detector import ACFD
from acfd.predict.modelfile import ModelFile

logger = logging.getLogger(__name__)

#: ``runner(images (B, 3, H, W) float32 normalised) -> (cls_logits (B, A), box_deltas (B, A, 4))``.
Backend = Callable[[np.ndarray], Sequence[Any]]
#: Backend names of :class:`~acfd.predict.detector.Detector`.
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")


def backend_config(backend: Backend) -> ModelConfig | None:
    """The model config a backend carries (``model_config`` / ``cfg`` / ``config``), if any."""
    for attr in ("model_config", "cfg", "config"):
        cfg = getattr(backend, attr, None)
        if isinstance(cfg, str):
            cfg = json.loads(cfg)
        if isinstance(cfg, dict):
            return model_config_from_dict(cfg)
        if isinstance(cfg, ModelConfig):
            return cfg
    return None


def backend_name(backend: Backend | None) -> str:
    """``"torch"`` (no backend), ``"onnx"`` (ONNX Runtime) or the class name of a custom backend."""
    if backend is None:
        return "torch"
    return "onnx" if isinstance(backend, OnnxRunner) else type(backend).__name__


def network_without_file(model: Any, weights: Any, device: torch.device, runner: Backend | None) -> ACFD:
    """The network of a detector whose weights are not a file: a module, or the config of a backend."""
    if isinstance(model, torch.nn.Module):
        if weights is not None:
            raise ValueError("weights= cannot be combined with a model instance; load them first")
        return model.to(device).eval()
    if isinstance(model, ModelConfig):
        if weights is not None or runner is None:
            raise ValueError("model=ModelConfig(...) is only for a backend= (it gives anchors, not weights)")
        return ACFD(model).to(device).eval()
    cfg = backend_config(runner) if runner is not None else None
    if cfg is None:
        raise ValueError(
            "backend= needs model= (a variant name, config or ACFD) for the anchors and box "
            "coder, unless the backend has a model_config attribute"
        )
    return ACFD(cfg).to(device).eval()



def onnx_backend(choice: str, network: ACFD, model_file: ModelFile | None, device: torch.device,
                 half: bool, threads: int | None = None, precision: str = "float32") -> Backend | None:
    """An ONNX Runtime runner of the fused network (cached export), or ``None`` for PyTorch.

    ``auto`` uses it only on CPU, in float32, for weights read from a file, and falls back to
    PyTorch (debug log / warning) when onnxruntime is missing or the export fails; ``onnx``
    raises instead. ``threads``: the session's intra-op threads. ``precision``: the graph's
    (:meth:`ModelFile.cached_onnx`; int8 graphs run on the CPU only).
    """
    explicit = choice == "onnx"
    from_file = model_file is not None and model_file.format in ("safetensors", "checkpoint")
    if precision == "int8" and not (from_file and device.type == "cpu" and not half):
        raise ValueError("precision='int8' runs the int8 graph beside a weights file, on the CPU, without half")
    reason = None
    if device.type != "cpu" and not explicit:
        reason = f"device {device}"
    elif half:
        reason = "half precision"
    elif not from_file and not explicit:
        reason = "weights not from a file"
    elif importlib.util.find_spec("onnxruntime") is None:
        reason = "onnxruntime is not installed"
    if reason is not None:
        if explicit:
            raise ValueError(f"backend='onnx' is not available here ({reason})")
        logger.debug("using PyTorch for the network (%s)", reason)
        return None
    # an explicit int8 without its graph is cached_onnx's error, raised here rather than swallowed below
    int8 = model_file.cached_onnx(network, "int8") if precision == "int8" else None  # type: ignore[union-attr]
    try:
        path = int8 or (model_file.cached_onnx(network, precision if device.type == "cpu" else "float32")  # type: ignore[union-attr]
                        if from_file else cached_onnx(network))
        providers = None if device.type == "cuda" else ["CPUExecutionProvider"]
        return OnnxRunner(path, providers=providers, num_threads=threads)
    except Exception as exc:
        if explicit:
            raise
        logger.warning("ONNX Runtime backend unavailable (%s); using PyTorch", exc)
        return None


def place_verifier(verifier: BoxVerifier, backend: Backend | None, device: torch.device,
                   threads: int | None = None) -> None:
    """The verifier's network with ONNX Runtime (``threads`` intra-op threads) where the detector's
    runs with it, else on the detector's device (PyTorch when the export fails)."""
    if isinstance(backend, OnnxRunner) and device.type == "cpu":
        try:
            verifier.use_onnx_runtime(threads)
            return
        except Exception as exc:  # noqa: BLE001 - any export / session failure: PyTorch instead
            logger.debug("verifier on PyTorch (ONNX Runtime failed: %s)", exc)
    verifier.to(device)


__all__ = ["BACKENDS", "Backend", "backend_config", "backend_name", "network_without_file", "onnx_backend", "place_verifier"]
