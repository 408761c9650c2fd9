"""Speed benchmark of the whole detection pipeline (the paper's "Time-Consuming Analysis").

The paper (4.3 and the slides) meets a 50 ms per image budget with three tricks: fusing ACBs and
conv+BN (about 3 ms at batch 1), batch processing, and TensorRT (48-49 ms on average). This module
measures the same ladder on this machine, per 1920x1080 frame (a synthetic frame) and per image of
a folder:

* backends: ``eager`` (PyTorch, training-form blocks), ``fused`` (re-parameterised), ``onnx``
  (ONNX Runtime on the fused export) and, on CUDA, ``compile`` (``torch.compile``, max-autotune)
  and ``tensorrt`` (``torch.compile(backend="tensorrt")`` when ``torch_tensorrt`` is installed);
* single- and multi-scale test (e.g. ``640`` and the paper's 480x645, 640x860, 800x1075);
* batch 1 and batched.

Each configuration runs ``warmup`` times, then ``iters`` timed times; every figure is the median
over the timed runs, in milliseconds per image: pre-processing (resize, normalise, pad), network,
post-processing (decode, NMS, multi-scale merge) and the total wall time of the call. Decoding image
files is not included (images are loaded once before timing). CUDA is synchronised at every step
(:class:`~acfd.predict.detector.Detector` does it). ``acfd bench`` prints the table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from acfd.deploy.export import DEFAULT_OPSET, export_onnx, tensorrt_available
from acfd.deploy.fuse import fuse_model
from acfd.deploy.onnx_runner import OnnxRunner
from acfd.detection.protocol import PAPER_SCORE_THRESH
from acfd.predict.detector import Detector
from acfd.utils import atomic_write_text

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("eager", "fused", "onnx", "compile", "tensorrt")
#: Backends that only make sense on a CUDA device.
CUDA_ONLY: frozenset[str] = frozenset({"compile", "tensorrt"})
#: Full-HD video frame, ``(height, width)``.
FRAME_SIZE: tuple[int, int] = (1080, 1920)
#: Score threshold of the paper's test protocol (the slowest post-processing case).
BENCH_SCORE_THRESH = PAPER_SCORE_THRESH


@dataclass
class BenchResult:
    """One configuration's median timings, milliseconds per image.

    Args:
        backend: ``eager``, ``fused``, ``onnx``, ``compile`` or ``tensorrt``.
        scales: the scale set as given (``"640"``, ``"paper"``, ``"640x860,800x1075"``).
        batch: images per network call.
        input: ``"frame HxW"`` or ``"<folder> (N)"``.
        preprocess_ms: resize, normalise and pad.
        network_ms: the network (or backend) call.
        postprocess_ms: decode, NMS and the multi-scale merge.
        total_ms: wall time of the whole call per image (includes small bookkeeping the three
            steps do not cover); ``None`` for a skipped configuration.
        images_per_s: ``1000 / total_ms``.
        note: why a configuration was skipped, or backend details.
    """

    backend: str
    scales: str
    batch: int
    input: str
    preprocess_ms: float | None = None
    network_ms: float | None = None
    postprocess_ms: float | None = None
    total_ms: float | None = None
    images_per_s: float | None = None
    note: str = ""


@dataclass
class BenchReport:
    """All results plus the run's settings and environment (``meta``)."""

    results: list[BenchResult] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "results": [dataclasses.asdict(r) for r in self.results]}

    def format_table(self) -> str:
        """A plain aligned text table, one line per result."""
        return format_table(self.results)

    def write_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON (atomic)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)


# --------------------------------------------------------------------------------------------
# parsing helpers


def parse_backends(spec: str | Sequence[str] | None, device: str | torch.device = "cpu") -> list[str]:
    """Backend names from ``"eager,fused,onnx"``; ``None`` is every backend for the device.

    Args:
        spec: comma-separated names or a list; ``None`` or ``"all"`` for the default set.
        device: the benchmark device (``compile``/``tensorrt`` are in the default set on CUDA only).

    Raises:
        ValueError: an unknown name or an empty list.
    """
    cuda = torch.device(device).type == "cuda"
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all", "auto")):
        return [b for b in BACKENDS if cuda or b not in CUDA_ONLY]
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    if not names:
        raise ValueError("no backends given")
    return list(dict.fromkeys(names))


def parse_batch_sizes(spec: str | Sequence[int]) -> list[int]:
    """``"1,8"`` -> ``[1, 8]``.

    Raises:
        ValueError: a value that is not a positive integer.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"invalid batch size {item!r}: expected positive integers like 1,8")
        out.append(int(text))
    if not out:
        raise ValueError("no batch sizes given")
    return list(dict.fromkeys(out))


def parse_size(spec: str | Sequence[int]) -> tuple[int, int]:
    """``"1080x1920"`` (height x width) -> ``(1080, 1920)``.

    Raises:
        ValueError: anything else.
    """
    if not isinstance(spec, str):
        h, w = (int(v) for v in spec)
        return h, w
    parts = spec.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= 16 for p in parts):
        raise ValueError(f"invalid size {spec!r}: expected HEIGHTxWIDTH, e.g. 1080x1920")
    return int(parts[0]), int(parts[1])


def synthetic_frame(height: int = FRAME_SIZE[0], width: int = FRAME_SIZE[1], seed: int = 0) -> np.ndarray:
    """A deterministic cartoon-like RGB uint8 frame (gradient background, flat-coloured shapes).

    Args:
        height: frame height.
        width: frame width.
        seed: random seed of the shapes.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frame = np.stack(
        [200 * xx / max(width - 1, 1) + 30, 180 * yy / max(height - 1, 1) + 40, 120 + 0 * xx], axis=-1
    ).astype(np.uint8)
    for _ in range(12):
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(max(4, min(height, width) // 40), max(8, min(height, width) // 6)))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(frame, (cx, cy), r, color, thickness=-1)
        cv2.circle(frame, (cx, cy), r, (0, 0, 0), thickness=max(1, r // 12))
    return np.ascontiguousarray(frame)


# --------------------------------------------------------------------------------------------
# backends


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _backend_networks(
    model: nn.Module,
    backends: Sequence[str],
    device: torch.device,
    opset: int,
    compile_mode: str,
    num_threads: int,
) -> Iterator[dict[str, tuple[nn.Module, Any, str]]]:
    """For each backend: ``(model for the Detector, backend callable or None, note)``, or a skip note."""
    fused = fuse_model(model).to(device).eval()
    nets: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="acfd-bench-") as tmp:
        for name in backends:
            if name in CUDA_ONLY and device.type != "cuda":
                nets[name] = f"skipped: needs a CUDA device (running on {device.type})"
                continue
            if name == "eager":
                nets[name] = (model.to(device).eval(), None, "")
            elif name == "fused":
                nets[name] = (fused, None, "")
            elif name == "onnx":
                path = export_onnx(model, Path(tmp) / "model.onnx", opset=opset)
                providers = None if device.type == "cuda" else ["CPUExecutionProvider"]
                runner = OnnxRunner(path, providers=providers, num_threads=num_threads)
                note = "onnxruntime " + ",".join(p.replace("ExecutionProvider", "") for p in runner.providers)
                nets[name] = (fused, runner, note)
            elif name == "compile":
                compiled = torch.compile(fused, mode=compile_mode, dynamic=False)
                nets[name] = (compiled, None, f"torch.compile {compile_mode}")
            elif name == "tensorrt":
                if not tensorrt_available():
                    nets[name] = "skipped: torch_tensorrt is not installed"
                    continue
                import torch_tensorrt  # noqa: F401 - optional (CUDA machines); registers the "tensorrt" compile backend

                compiled = torch.compile(fused, backend="tensorrt", dynamic=False)
                nets[name] = (compiled, None, "torch_tensorrt")
        yield nets


def _time_config(
    detector: Any,
    images: Sequence[np.ndarray],
    batch: int,
    warmup: int,
    iters: int,
) -> dict[str, float]:
    """Median ms per image of each step over ``iters`` runs after ``warmup`` runs."""
    samples: dict[str, list[float]] = {"preprocess": [], "forward": [], "postprocess": [], "total": []}
    n = len(images)
    for i in range(warmup + iters):
        detector.timings.reset()
        _sync(detector.device)
        start = time.perf_counter()
        detector.detect_arrays(images, batch_size=batch)
        _sync(detector.device)
        elapsed = time.perf_counter() - start
        if i < warmup:
            continue
        t = detector.timings
        samples["preprocess"].append(1000.0 * t.preprocess / n)
        samples["forward"].append(1000.0 * t.forward / n)
        samples["postprocess"].append(1000.0 * t.postprocess / n)
        samples["total"].append(1000.0 * elapsed / n)
    return {k: statistics.median(v) for k, v in samples.items()}


def _environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        env["onnxruntime"] = importlib.metadata.version("onnxruntime")
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def run_benchmark(
    model: nn.Module,
    device: str | torch.device = "cpu",
    backends: str | Sequence[str] | None = None,
    scale_sets: Sequence[str] = ("640", "paper"),
    batch_sizes: Sequence[int] = (1, 8),
    warmup: int = 2,
    iters: int = 10,
    frame_size: Sequence[int] | None = FRAME_SIZE,
    images: Sequence[np.ndarray] | None = None,
    images_label: str = "images",
    score_thresh: float = BENCH_SCORE_THRESH,
    opset: int | None = None,
    compile_mode: str = "max-autotune",
    num_threads: int | None = None,
    nms_thresh: float | None = None,
    progress: bool = True,
) -> BenchReport:
    """Time the detection pipeline for every backend x scale set x batch size x input.

    Args:
        model: an :class:`~acfd.models.ACFD` (its weights only matter for the post-processing
            load: a trained model keeps fewer boxes than a random one).
        device: ``"cpu"`` or ``"cuda"``.
        backends: see :func:`parse_backends`; ``None`` is every backend the device supports.
        scale_sets: test-scale sets, each as :func:`acfd.predict.scales.parse_scales` takes it
            (``"640"``, ``"paper"``, ``"640x860,800x1075"``).
        batch_sizes: network batch sizes; the frame input is that many copies of the frame.
        warmup: untimed runs per configuration (also where ``torch.compile`` compiles).
        iters: timed runs per configuration (the median is reported).
        frame_size: ``(height, width)`` of the synthetic video frame; ``None`` skips it.
        images: RGB uint8 images (e.g. from a dev folder), all processed in each run.
        images_label: how the images are named in the table.
        score_thresh: the detector's score threshold (the paper's 0.08 by default).
        opset: ONNX opset for the ``onnx`` backend (``None``: the export default).
        compile_mode: ``torch.compile`` mode of the ``compile`` backend.
        num_threads: CPU threads for PyTorch and ONNX Runtime (``None``: PyTorch's current).
        nms_thresh: the NMS threshold (``None``: that of the generic interactive preset; pass the
            weights' own, ``ModelFile.preset("interactive").nms_thresh``).
        progress: a progress bar over the configurations on stderr (hidden when it is no terminal).

    Returns:
        A :class:`BenchReport`.

    Raises:
        ValueError: bad arguments, no input at all, or ``cuda`` without a GPU.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for but torch.cuda.is_available() is False")
    if warmup < 0 or iters < 1:
        raise ValueError(f"need warmup >= 0 and iters >= 1, got warmup={warmup}, iters={iters}")
    names = parse_backends(backends, dev)
    batches = parse_batch_sizes(batch_sizes)
    if not scale_sets:
        raise ValueError("no scale sets given")
    inputs: list[tuple[str, list[np.ndarray], bool]] = []
    if frame_size is not None:
        fh, fw = parse_size(frame_size)
        inputs.append((f"frame {fh}x{fw}", [synthetic_frame(fh, fw)], True))
    if images:
        inputs.append((f"{images_label} ({len(images)})", list(images), False))
    if not inputs:
        raise ValueError("nothing to benchmark: no frame size and no images")
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        torch.set_num_threads(int(num_threads))
    try:
        return _run(
            model, dev, names, scale_sets, batches, warmup, iters, inputs, score_thresh,
            DEFAULT_OPSET if opset is None else opset, compile_mode, nms_thresh, progress,
        )
    finally:
        torch.set_num_threads(previous_threads)


def _run(
    model: nn.Module,
    dev: torch.device,
    names: list[str],
    scale_sets: Sequence[str],
    batches: list[int],
    warmup: int,
    iters: int,
    inputs: list[tuple[str, list[np.ndarray], bool]],
    score_thresh: float,
    opset: int,
    compile_mode: str,
    nms_thresh: float | None,
    progress: bool = True,
) -> BenchReport:
    threads = torch.get_num_threads()
    report = BenchReport(
        meta={
            "model": getattr(getattr(model, "cfg", None), "name", type(model).__name__),
            "device": str(dev),
            "backends": names,
            "scale_sets": list(scale_sets),
            "batch_sizes": batches,
            "warmup": warmup,
            "iters": iters,
            "score_thresh": score_thresh,
            "inputs": [label for label, _, _ in inputs],
            "units": "milliseconds per image, median over iters",
            **_environment(dev),
        }
    )
    model = model.to(dev).eval()
    total = len(names) * len(scale_sets) * len(inputs) * len(batches)
    bar = tqdm(total=total, unit="config", desc="bench", file=sys.stderr, disable=None if progress else True)
    with bar, _backend_networks(model, names, dev, opset, compile_mode, threads) as nets:
        for name in names:
            entry = nets[name]
            for scales in scale_sets:
                for label, imgs, is_frame in inputs:
                    for batch in batches:
                        bar.set_postfix_str(f"{name} {scales} batch {batch}")
                        if isinstance(entry, str):  # skipped backend
                            report.results.append(BenchResult(name, scales, batch, label, note=entry))
                            bar.update(1)
                            continue
                        net, runner, note = entry
                        detector = Detector(
                            model=net, device=dev, scales=scales, score_thresh=score_thresh, nms_thresh=nms_thresh,
                            backend=runner,
                        )
                        # the frame case sends `batch` copies of the frame in one call
                        run_imgs = imgs * batch if is_frame else imgs
                        logger.info("bench %s scales=%s batch=%d %s", name, scales, batch, label)
                        ms = _time_config(detector, run_imgs, batch, warmup, iters)
                        report.results.append(
                            BenchResult(
                                backend=name,
                                scales=scales,
                                batch=batch,
                                input=label,
                                preprocess_ms=ms["preprocess"],
                                network_ms=ms["forward"],
                                postprocess_ms=ms["postprocess"],
                                total_ms=ms["total"],
                                images_per_s=1000.0 / ms["total"] if ms["total"] > 0 else None,
                                note=note,
                            )
                        )
                        bar.update(1)
    return report


# --------------------------------------------------------------------------------------------
# output

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("backend", "backend"),
    ("scales", "scales"),
    ("batch", "batch"),
    ("input", "input"),
    ("preprocess_ms", "pre ms"),
    ("network_ms", "net ms"),
    ("postprocess_ms", "post ms"),
    ("total_ms", "total ms"),
    ("images_per_s", "img/s"),
    ("note", "note"),
)
_NUMERIC = {"batch", "preprocess_ms", "network_ms", "postprocess_ms", "total_ms", "images_per_s"}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if value >= 100 else f"{value:.2f}"
    return str(value)


def format_table(results: Sequence[BenchResult]) -> str:
    """Results as a plain text table (numbers right-aligned, text left-aligned)."""
    rows = [[_cell(getattr(r, key)) for key, _ in _COLUMNS] for r in results]
    headers = [title for _, title in _COLUMNS]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = []
        for (key, _), cell, width in zip(_COLUMNS, cells, widths):
            parts.append(cell.rjust(width) if key in _NUMERIC else cell.ljust(width))
        return "  ".join(parts).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


__all__ = [
    "BACKENDS",
    "BENCH_SCORE_THRESH",
    "FRAME_SIZE",
    "BenchReport",
    "BenchResult",
    "format_table",
    "parse_backends",
    "parse_batch_sizes",
    "parse_size",
    "run_benchmark",
    "synthetic_frame",
]
