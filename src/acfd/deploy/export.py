"""Export the raw-tensor network for deployment (paper 4.3): ONNX and, on CUDA, TensorRT.

Export means copy, fuse (:func:`~acfd.deploy.fuse.fuse_model`), eval, export. The exported graph is
the network of :meth:`ACFD.forward`: input ``images`` ``(B, 3, H, W)`` normalised float, outputs
``cls_logits (B, A)`` and ``box_deltas (B, A, 4)``. Pre-processing (resize, normalise), anchors and
post-processing stay in Python (:class:`acfd.predict.Detector`, fed by
:class:`acfd.deploy.onnx_runner.OnnxRunner`). :func:`cached_onnx` keeps one export per weights
file in the cache folder, for the detector's ONNX Runtime backend.

ONNX uses the TorchScript exporter (``dynamo=False``): with torch 2.14 it exports the model's
pad-to-128 step with fully dynamic batch, height and width in about a second, so any input size
works. The dynamo exporter cannot reason about ``(128 - h % 128) % 128`` for a free ``h`` (it
fails in ``solve_univariate_inequality``); with ``H = 128 * k`` it works but takes minutes on CPU
even for ``acfd-tiny`` and then only accepts multiples of 128.

The model name and its full config (JSON) go into the ONNX ``metadata_props`` (keys ``model`` and
``config``), so a runner can rebuild anchors and the box coder without any other file; what the
weights file adds (score calibration, presets, the fingerprint tying its verifier) is chosen by
:meth:`acfd.predict.modelfile.ModelFile.export_onnx`.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from acfd.config import config_to_dict
from acfd.deploy.fuse import fuse_model
from acfd.deploy.onnx_runner import INPUT_NAME, META_CONFIG, META_MODEL, OUTPUT_NAMES
from acfd.utils import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    cache_dir,
    package_version,
    state_sha256,
)

logger = logging.getLogger(__name__)

#: Default ONNX opset (supported by onnxruntime >= 1.12 and the TorchScript exporter).
DEFAULT_OPSET = 17


def _model_name(model: nn.Module) -> str:
    cfg = getattr(model, "cfg", None)
    name = getattr(cfg, "name", None)
    return str(name) if name else type(model).__name__


def _config_json(model: nn.Module) -> str | None:
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        return None
    return json.dumps(config_to_dict(cfg), sort_keys=True)


def _check_sample_size(sample_size: Sequence[int]) -> tuple[int, int]:
    if len(sample_size) != 2 or any(int(v) < 16 for v in sample_size):
        raise ValueError(f"sample_size must be (height, width), each >= 16; got {tuple(sample_size)}")
    return int(sample_size[0]), int(sample_size[1])


def prepare_for_export(model: nn.Module, fuse: bool = True) -> nn.Module:
    """A copy of ``model`` on the CPU in eval mode, fused (ACB -> 3x3 conv, conv+BN -> conv) if asked.

    Args:
        model: the network (left untouched).
        fuse: re-parameterise with :func:`~acfd.deploy.fuse.fuse_model`.
    """
    out = fuse_model(model) if fuse else copy.deepcopy(model)
    return out.eval()


def export_onnx(
    model: nn.Module,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
    fuse: bool = True,
    sample_size: Sequence[int] = (640, 640),
    half: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export the raw-tensor network to ONNX (atomic write).

    Args:
        model: an :class:`~acfd.models.ACFD` (left untouched: a copy is fused and exported).
        path: the ``.onnx`` file to write.
        opset: ONNX opset version (>= 11).
        dynamic: dynamic batch, height and width (any size: the model pads to 128 inside the
            graph); ``False`` fixes the input to ``(1, 3, *sample_size)``.
        fuse: fuse ACBs and conv+BN first (paper 4.3); the outputs are the same up to float
            rounding.
        sample_size: ``(height, width)`` of the tracing input.
        half: export in float16 (input and outputs float16; traced on CUDA when available).
            :class:`~acfd.deploy.onnx_runner.OnnxRunner` casts to and from float32.
        metadata: extra ``metadata_props`` entries.

    Returns:
        ``path``.

    Raises:
        ValueError: a bad ``opset`` or ``sample_size``.
    """
    import onnx  # only needed to write an export: the detector itself runs without it

    if opset < 11:
        raise ValueError(f"opset must be >= 11 (dynamic padding needs it), got {opset}")
    h, w = _check_sample_size(sample_size)
    path = Path(path)
    net = prepare_for_export(model, fuse=fuse)
    device = torch.device("cuda" if half and torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if half else torch.float32
    net = net.to(device=device, dtype=dtype)
    sample = torch.zeros(1, 3, h, w, device=device, dtype=dtype)
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {
            INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
            OUTPUT_NAMES[0]: {0: "batch", 1: "anchors"},
            OUTPUT_NAMES[1]: {0: "batch", 1: "anchors"},
        }
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The shape tests in the neck's resampling are decided per pyramid level and hold for
        # every input size once it is padded to 128, so the tracer's warnings about them are moot.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.onnx.export(
            net,
            (sample,),
            buffer,
            dynamo=False,
            opset_version=int(opset),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    props = {
        META_MODEL: _model_name(model),
        "acfd_version": package_version(),
        "fused": str(bool(fuse)).lower(),
        "dynamic": str(bool(dynamic)).lower(),
        "dtype": "float16" if half else "float32",
        "sample_size": f"{h}x{w}",
        "size_divisor": str(getattr(getattr(model, "cfg", None), "size_divisor", "")),
    }
    cfg_json = _config_json(model)
    if cfg_json is not None:
        props[META_CONFIG] = cfg_json
    props.update(metadata or {})
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    proto.producer_name = "acfd"
    onnx.checker.check_model(proto)
    atomic_write_bytes(path, proto.SerializeToString())
    logger.info("exported %s to %s (opset %d, %s)", props[META_MODEL], path, opset, props["dtype"])
    return path


def cached_onnx(model: nn.Module, digest: str | None = None, opset: int = DEFAULT_OPSET) -> Path:
    """The fused dynamic-size ONNX export of ``model``, made once and kept in :func:`acfd.utils.cache_dir`.

    The file name holds the model name, ``digest`` (the SHA-256 of the weights file the model was
    loaded from, its model file's cache key; without it, of the state dict), the opset and the acfd
    version, so new weights or a new release export again. The export is written atomically, so
    two processes racing for it both end with a whole file.

    Args:
        model: the loaded PyTorch network (left untouched).
        digest: the weights file's SHA-256 (hashing the file is cheaper than the state dict).
        opset: ONNX opset.
    """
    digest = digest or state_sha256(model)
    name = getattr(getattr(model, "cfg", None), "name", "model")
    path = cache_dir() / f"{name}-{digest[:24]}-opset{opset}-v{package_version()}.onnx"
    if not path.is_file():
        logger.info("exporting %s to ONNX once (cached as %s)", name, path)
        export_onnx(model, path, opset=opset, dynamic=True, fuse=True)
    return path


# --------------------------------------------------------------------------------------------
# TensorRT


def tensorrt_available() -> bool:
    """Whether ``torch_tensorrt`` can be imported (a CUDA GPU is needed as well)."""
    return importlib.util.find_spec("torch_tensorrt") is not None


def export_tensorrt(
    model: nn.Module,
    path: str | Path,
    half: bool = True,
    fuse: bool = True,
    sample_size: Sequence[int] = (640, 640),
    max_batch: int = 16,
    device: str | torch.device = "cuda",
) -> Path:
    """Compile the network for a CUDA GPU and save it (paper 4.3: TensorRT, large batches).

    With ``torch_tensorrt`` installed, a TensorRT engine is built (``ir="dynamo"``) for inputs
    ``(1..max_batch, 3, *sample_size)`` and saved as an ``ExportedProgram`` (load it with
    ``torch.export.load(path).module()``, after ``import torch_tensorrt``). Without it, the network
    goes through ``torch.export`` and AOTInductor with max-autotune (what
    ``torch.compile(mode="max-autotune")`` does, but saved): a ``.pt2`` package, loaded with
    ``torch._inductor.aoti_load_package(path)``. Height and width are fixed to ``sample_size``
    (the paper's test scales are fixed sizes too); the batch is dynamic. A ``<path>.json`` next to
    the file holds the model name, config, input size and backend.

    Args:
        model: the network (left untouched).
        path: the file to write (``.ep`` for TensorRT, ``.pt2`` for AOTInductor by convention).
        half: build for float16 inputs and weights.
        fuse: fuse ACBs and conv+BN first.
        sample_size: ``(height, width)`` of the input (multiples of 128 avoid the padding).
        max_batch: largest batch the saved program accepts.
        device: the CUDA device to build on.

    Returns:
        ``path``.

    Raises:
        RuntimeError: no CUDA GPU.
        ValueError: a bad ``sample_size`` or ``max_batch``.
    """
    if not torch.cuda.is_available():
        raise RuntimeError(
            "TensorRT export needs a CUDA GPU (torch.cuda.is_available() is False on this machine); "
            "use export_onnx() / `acfd export --format onnx` for CPU deployment"
        )
    dev = torch.device(device)
    if dev.type != "cuda":
        raise RuntimeError(f"TensorRT export needs a CUDA GPU device, got device={str(dev)!r}")
    h, w = _check_sample_size(sample_size)
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    path = Path(path)
    dtype = torch.float16 if half else torch.float32
    net = prepare_for_export(model, fuse=fuse).to(device=dev, dtype=dtype)
    sample = torch.zeros(1, 3, h, w, device=dev, dtype=dtype)
    if tensorrt_available():
        backend = "tensorrt"
        _save_tensorrt(net, sample, path, max_batch)
    else:
        backend = "aotinductor"
        logger.warning(
            "torch_tensorrt is not installed: compiling with AOTInductor (max-autotune) instead"
        )
        _save_aoti(net, sample, path, max_batch)
    info: dict[str, Any] = {
        META_MODEL: _model_name(model),
        "backend": backend,
        "input_size": [h, w],
        "max_batch": max_batch,
        "dtype": "float16" if half else "float32",
        "fused": fuse,
        "torch": torch.__version__,
    }
    cfg_json = _config_json(model)
    if cfg_json is not None:
        info[META_CONFIG] = json.loads(cfg_json)
    atomic_write_text(Path(f"{path}.json"), json.dumps(info, indent=2) + "\n")
    logger.info("saved %s engine of %s to %s", backend, info[META_MODEL], path)
    return path


def _save_tensorrt(net: nn.Module, sample: torch.Tensor, path: Path, max_batch: int) -> None:
    import torch_tensorrt  # optional (CUDA machines only): tensorrt_available() checked it

    _, c, h, w = sample.shape
    spec = torch_tensorrt.Input(
        min_shape=(1, c, h, w), opt_shape=(1, c, h, w), max_shape=(max_batch, c, h, w), dtype=sample.dtype
    )
    with torch.no_grad():
        trt_module = torch_tensorrt.compile(net, ir="dynamo", inputs=[spec])
    with atomic_path(path) as tmp:
        try:
            torch_tensorrt.save(trt_module, str(tmp), arg_inputs=[sample])
        except TypeError:  # torch_tensorrt < 2.5 names it inputs=
            torch_tensorrt.save(trt_module, str(tmp), inputs=[sample])


def _save_aoti(net: nn.Module, sample: torch.Tensor, path: Path, max_batch: int) -> None:
    batch = torch.export.Dim("batch", min=1, max=max_batch) if max_batch > 1 else None
    dynamic_shapes = {"images": {0: batch}} if batch is not None else None
    with torch.no_grad():
        program = torch.export.export(net, (sample,), dynamic_shapes=dynamic_shapes)
    path.parent.mkdir(parents=True, exist_ok=True)
    # AOTInductor wants a ``.pt2`` name: build in a private folder, then rename (atomic).
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp_dir:
        tmp = Path(tmp_dir) / "model.pt2"
        torch._inductor.aoti_compile_and_package(
            program, package_path=str(tmp), inductor_configs={"max_autotune": True}
        )
        os.replace(tmp, path)


__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "META_CONFIG",
    "META_MODEL",
    "OUTPUT_NAMES",
    "cached_onnx",
    "export_onnx",
    "export_tensorrt",
    "prepare_for_export",
    "tensorrt_available",
]
