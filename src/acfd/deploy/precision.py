"""Which numeric precision the CPU networks run in: float32, or int8 where the CPU has fast int8 kernels.

An int8 graph (:func:`acfd.deploy.quantize.quantize_onnx`) sits beside its float32 graph as
``NAME-int8.onnx`` (``acfd export --int8 IMAGES`` writes it; the shipped detector has one) and
keeps the float32 graph's metadata, so it is recognised as made from the same weights.

``precision="auto"`` takes int8 only on CPUs with dot-product instructions for 8-bit integers
(AVX512-VNNI, AVX-VNNI or AMX-INT8): there ONNX Runtime's uint8 x int8 kernels are exact and fast.
Without them (AVX2 only) the same kernels can saturate their 16-bit intermediate sums and are not
the default; ``precision="int8"`` still runs them when asked.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

#: What ``precision`` may be, in the API, the CLI and the service.
PRECISIONS = ("auto", "float32", "int8")

#: ``/proc/cpuinfo`` flags of the instructions that make int8 inference fast and exact.
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")

#: How an int8 graph is named after its float32 graph: ``acfd-n.onnx`` -> ``acfd-n-int8.onnx``.
INT8_SUFFIX = "-int8"


@functools.cache
def cpu_has_int8_dot() -> bool:
    """Whether this CPU has one of :data:`INT8_DOT_FLAGS` (``False`` where ``/proc/cpuinfo`` is missing)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in INT8_DOT_FLAGS)


def check_precision(precision: str) -> str:
    """``precision`` itself when it is one of :data:`PRECISIONS`, else a ``ValueError``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def resolve_precision(precision: str) -> str:
    """``"float32"`` or ``"int8"`` for a :data:`PRECISIONS` value: ``"auto"`` is int8 on CPUs with
    int8 dot products (:func:`cpu_has_int8_dot`), else float32."""
    check_precision(precision)
    if precision != "auto":
        return precision
    return "int8" if cpu_has_int8_dot() else "float32"


def int8_graph_path(graph: str | os.PathLike[str]) -> Path:
    """Where the int8 graph of the float32 graph ``graph`` is kept: ``NAME-int8.onnx`` beside it."""
    graph = Path(graph)
    return graph.with_name(graph.stem + INT8_SUFFIX + ".onnx")


def float_graph_stem(graph: str | os.PathLike[str]) -> str:
    """The stem of the float32 graph an ONNX file was made from: ``acfd-n`` for ``acfd-n-int8.onnx``
    and ``acfd-n.onnx`` (the verifier's stage graph is named after it: ``acfd-n-verifier.onnx``)."""
    stem = Path(graph).stem
    return stem.removesuffix(INT8_SUFFIX)


__all__ = ["INT8_DOT_FLAGS", "PRECISIONS", "check_precision", "cpu_has_int8_dot", "float_graph_stem",
           "int8_graph_path", "resolve_precision"]
