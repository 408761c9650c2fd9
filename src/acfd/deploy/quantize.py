"""Static INT8 quantization of exported ONNX graphs (the detector and the verifier) for the CPU.

:func:`quantize_onnx` runs ONNX Runtime's static quantization
(``onnxruntime.quantization.quantize_static``) on a float32 ``.onnx`` file: activation ranges are
measured on calibration batches (inputs the network really gets), weights become int8 per output
channel, and the graph is written in the QDQ format (``QuantizeLinear`` / ``DequantizeLinear``
pairs around each quantized operator). ONNX Runtime's CPU provider fuses each ``DQ -> op -> Q``
group into an integer kernel (``QLinearConv``...) where it has one, and leaves the float op between
the pair where it has none, so an operator type without integer kernels only costs conversions:
:data:`DEFAULT_EXCLUDED_OP_TYPES` keeps those in float32.

The output keeps every ``metadata_props`` entry of its source (so ``Detector("acfd-n-int8.onnx")``
still finds the model config, calibration and presets there) and adds :data:`META_QUANTIZATION`: a
JSON object saying it is int8, how it was quantized and what it was calibrated on
(:func:`quantization_info` reads it back).

Calibration batches are dictionaries ``{input name: array}``, one network call each:
:func:`detector_calibration_batches` makes them from images exactly as the detector feeds its network
(:meth:`acfd.predict.detector.Detector.preprocess` at one scale), and
:func:`verifier_calibration_batches` from boxes on those images, as the verifier's stage graph gets
them (the image and the crop squares; the graph cuts each crop and its mirror image). Calibrate on
training images, never on the images the quantized model is then scored on.

Example::

    from acfd import Detector
    from acfd.deploy.quantize import detector_calibration_batches, quantize_onnx

    from acfd.predict.onnx_pipeline import shipped_graphs

    graph, _ = shipped_graphs()  # acfd-n.onnx
    batches = detector_calibration_batches(Detector(verifier=None), train_images, scale="640")
    quantize_onnx(graph, "acfd-n-int8.onnx", batches, calibrated_on="128 train images at 640")
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from acfd.deploy.onnx_runner import META_QUANTIZATION
from acfd.utils import atomic_write_bytes, file_sha256

logger = logging.getLogger(__name__)

#: Activation types :func:`quantize_onnx` accepts.
ACTIVATION_TYPES: tuple[str, ...] = ("quint8", "qint8")
#: Calibration methods :func:`quantize_onnx` accepts (ONNX Runtime's ``CalibrationMethod``). Not
#: ``Entropy``: ``quantize_static`` builds its histograms with as many bins (128) as it quantizes
#: to, so the entropy search has one candidate, the whole range, and gives MinMax's model.
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "percentile")
#: Operator types left in float32 by default: normalisations, which have no integer kernel in ONNX
#: Runtime's CPU provider (quantized, one runs as DQ -> float op -> Q). In the detector's fused graph
#: the GroupNorms of the head are exported as InstanceNormalization between Reshapes whose
#: quantized neighbours round its input and output anyway: quantizing it too gives the same model
#: outputs and dev AP50, only more conversions.
DEFAULT_EXCLUDED_OP_TYPES: tuple[str, ...] = ("InstanceNormalization", "LayerNormalization", "BatchNormalization")


class _BatchReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over a list of batches that the calibrator
    reads one at a time (``set_range``, with ``quantize_static``'s ``CalibStridedMinMax`` = 1): it
    then holds the intermediate outputs of one batch only, and the histogram calibrators, which
    stack the outputs of what they read at once, accept batches of different image sizes."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self.batches = batches
        self._items: Iterator[dict[str, np.ndarray]] = iter(batches)

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._items = iter(self.batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def _quant_type(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    return {"quint8": QuantType.QUInt8, "qint8": QuantType.QInt8}[name]


def _calibration_method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}[name]


def quantizable_op_types() -> set[str]:
    """Every operator type ONNX Runtime's static quantizer can quantize (its default set)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(QDQRegistry) | set(QLinearOpsRegistry)


def _check_batches(batches: list[dict[str, np.ndarray]], input_names: list[str], source: Path) -> None:
    if not batches:
        raise ValueError(f"{source}: no calibration batch given")
    for i, batch in enumerate(batches):
        missing = [n for n in input_names if n not in batch]
        if missing:
            raise ValueError(f"{source}: calibration batch {i} lacks input(s) {missing} (the model's inputs: {input_names})")


def quantize_onnx(
    model_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    calibration_batches: Iterable[Mapping[str, np.ndarray]],
    per_channel: bool = True,
    *,
    activation_type: str = "quint8",
    calibration_method: str = "minmax",
    percentile: float = 99.999,
    exclude_op_types: Sequence[str] = DEFAULT_EXCLUDED_OP_TYPES,
    nodes_to_exclude: Sequence[str] = (),
    float_outputs: bool = True,
    preprocess: bool = True,
    calibrated_on: str = "",
) -> Path:
    """Quantize a float32 ONNX graph to int8 (static, QDQ) with ranges measured on ``calibration_batches``.

    Args:
        model_path: the float32 ``.onnx`` file (left untouched).
        out_path: the quantized ``.onnx`` file to write (atomically; not ``model_path``).
        calibration_batches: ``{input name: float32 array}`` per network call, as the network gets
            them at run time (:func:`detector_calibration_batches`, :func:`verifier_calibration_batches`);
            all are kept in memory while quantizing.
        per_channel: one int8 scale per output channel of each weight (else one per tensor).
        activation_type: ``"quint8"`` (asymmetric uint8, what ONNX Runtime's x86 kernels prefer)
            or ``"qint8"`` (symmetric int8). Weights are always int8, symmetric.
        calibration_method: how a tensor's range is chosen from the values it took on the
            batches: ``"minmax"`` (all of them) or ``"percentile"`` (symmetric, up to the
            ``percentile``-th percentile of the magnitudes: rare outliers are clipped).
        percentile: the percentile of ``"percentile"`` calibration.
        exclude_op_types: operator types kept in float32 (default :data:`DEFAULT_EXCLUDED_OP_TYPES`).
        nodes_to_exclude: node names kept in float32.
        float_outputs: keep in float32 the last weight layers and what follows them to the
            outputs (:func:`output_tail`), so that the outputs are not rounded to 256 levels of
            one range. For the shipped detector and verifier this is what keeps the dev AP50:
            rounded, the detector's concatenated face logits and box deltas, and the verifier's
            logit with its box offsets, cost about a point each (docs/experiments/detector.md).
        preprocess: run ONNX Runtime's ``quant_pre_process`` first (ONNX shape inference and
            ONNX Runtime's basic graph optimisation: constants folded, so that e.g. the detector's
            fusion weights and the GroupNorm biases become initializers); skipped with a debug log
            when it fails on the graph.
        calibrated_on: what the batches were made from (stored in the metadata).

    Returns:
        ``out_path``.

    Raises:
        FileNotFoundError: ``model_path`` does not exist.
        ValueError: ``out_path`` is ``model_path``, an unknown ``activation_type`` or
            ``calibration_method``, no batch, or a batch without one of the model's inputs.
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    source, out = Path(model_path), Path(out_path)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: ONNX model not found")
    if out.resolve() == source.resolve():
        raise ValueError(f"{out}: the quantized model must not overwrite its source")
    if activation_type not in ACTIVATION_TYPES:
        raise ValueError(f"activation_type must be one of {', '.join(ACTIVATION_TYPES)}, got {activation_type!r}")
    if calibration_method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration_method must be one of {', '.join(CALIBRATION_METHODS)}, got {calibration_method!r}")
    original = onnx.load(str(source))
    initializers = {t.name for t in original.graph.initializer}
    input_names = [i.name for i in original.graph.input if i.name not in initializers]
    given = list(calibration_batches)
    _check_batches(given, input_names, source)
    batches = [{name: np.ascontiguousarray(b[name], dtype=np.float32) for name in input_names} for b in given]
    del given

    excluded = set(exclude_op_types)
    present = {node.op_type for node in original.graph.node}
    op_types = sorted((quantizable_op_types() & present) - excluded)
    with tempfile.TemporaryDirectory(prefix="acfd-quantize-") as tmp:
        to_quantize = source
        if preprocess:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            prepared = Path(tmp) / "prepared.onnx"
            # Without its symbolic shape inference, which cannot follow a graph that pads its input
            # to a multiple (the detector's: it fails after seconds of sympy) and adds nothing to
            # ONNX's own for convolutional graphs.
            try:
                quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
                to_quantize = prepared
            except Exception as exc:  # noqa: BLE001 - an optional step: quantize the graph as it is
                logger.debug("quant_pre_process failed on %s (%s); quantizing it as it is", source, exc)
        excluded_nodes = list(nodes_to_exclude) + (output_tail(to_quantize) if float_outputs else [])
        quantized = Path(tmp) / "quantized.onnx"
        with contextlib.redirect_stdout(io.StringIO()) as printed:  # the histogram calibrators print
            quantize_static(
                str(to_quantize), str(quantized), _BatchReader(batches),
                quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types, per_channel=per_channel,
                activation_type=_quant_type(activation_type), weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded_nodes, calibrate_method=_calibration_method(calibration_method),
                calibration_providers=["CPUExecutionProvider"],
                extra_options={"CalibStridedMinMax": 1, "ActivationSymmetric": activation_type == "qint8",
                               "CalibPercentile": percentile},
            )
        logger.debug("%s", printed.getvalue().strip())
        proto = onnx.load(str(quantized))
    info = {
        "dtype": "int8",
        "format": "QDQ",
        "weights": "qint8 per channel" if per_channel else "qint8 per tensor",
        "activations": activation_type,
        "calibration": calibration_method if calibration_method != "percentile" else f"percentile {percentile}",
        "calibrated_on": calibrated_on or f"{len(batches)} batches",
        "calibration_batches": len(batches),
        "excluded_op_types": sorted(excluded & present),
        "excluded_nodes": excluded_nodes,
        "preprocessed": to_quantize != source,
        "source_sha256": file_sha256(source),
        "onnxruntime": onnxruntime.__version__,
    }
    props = {p.key: p.value for p in original.metadata_props} | {META_QUANTIZATION: json.dumps(info, sort_keys=True)}
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    atomic_write_bytes(out, proto.SerializeToString())
    logger.debug("quantized %s to %s (%s activations, %s calibration on %s)", source, out, activation_type,
                calibration_method, info["calibrated_on"])
    return out


def quantization_info(model: str | os.PathLike[str] | Any) -> dict[str, Any] | None:
    """What :func:`quantize_onnx` stored in a graph (a path or an ``onnx.ModelProto``), or ``None``
    for a graph it did not write."""
    import onnx

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    raw = {p.key: p.value for p in proto.metadata_props}.get(META_QUANTIZATION)
    return json.loads(raw) if raw else None


#: Operators that only move, reshape or combine values: :func:`output_tail` looks through them.
_PASS_THROUGH = frozenset({"Reshape", "Transpose", "Concat", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Slice",
                           "Split", "Gather", "Add", "Sub", "Mul", "Div", "Neg", "Cast"})
_WEIGHT_LAYERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def output_tail(model: str | os.PathLike[str] | Any) -> list[str]:
    """Names of the nodes from the last weight layers (Conv, Gemm, MatMul) to the graph's outputs:
    those layers and the reshaping, concatenation and elementwise arithmetic after them (the
    detector's per-level head outputs concatenated, the verifier's members averaged with their
    mirror). Quantized, each of these rounds the outputs to 256 levels of one range, shared by
    values of different scales (a face logit and box offsets a hundred times smaller)."""
    import onnx

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    producer = {name: node for node in proto.graph.node for name in node.output}
    found: set[str] = set()
    stack = [o.name for o in proto.graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in found:
            continue
        if node.op_type in _WEIGHT_LAYERS:
            found.add(node.name)
        elif node.op_type in _PASS_THROUGH:
            found.add(node.name)
            stack.extend(node.input)
    return sorted(found)


def qdq_coverage(model: str | os.PathLike[str] | Any) -> dict[str, tuple[int, int]]:
    """Per operator type of a graph (a path or an ``onnx.ModelProto``): ``(quantized, total)``
    nodes. A node counts as quantized when an activation input comes from a ``DequantizeLinear``
    and an output goes into a ``QuantizeLinear``: a ``DQ -> op -> Q`` group that ONNX Runtime can
    run in int8. The QDQ nodes themselves are left out."""
    import onnx

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    initializers = {t.name for t in proto.graph.initializer}
    dequantized: set[str] = set()
    quantized_inputs: set[str] = set()
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] not in initializers:
            dequantized.update(node.output)
        elif node.op_type == "QuantizeLinear":
            quantized_inputs.add(node.input[0])
    totals: collections.Counter[str] = collections.Counter()
    quantized: collections.Counter[str] = collections.Counter()
    for node in proto.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        totals[node.op_type] += 1
        quantized[node.op_type] += (any(name in dequantized for name in node.input)
                                    and any(name in quantized_inputs for name in node.output))
    return {op: (quantized[op], totals[op]) for op in sorted(totals)}


# -- calibration batches ---------------------------------------------------------------------------


def detector_calibration_batches(detector: Any, images: Iterable[np.ndarray], scale: Any = None) -> Iterator[dict[str, np.ndarray]]:
    """The detector network's inputs for ``images``, one image per batch: ``{"images": (1, 3, H, W)}``
    exactly as :meth:`~acfd.predict.detector.Detector.preprocess` makes them.

    Args:
        detector: a :class:`~acfd.predict.detector.Detector`.
        images: ``(H, W, 3)`` uint8 RGB arrays (training images).
        scale: the test scale (a :class:`~acfd.predict.scales.Scale` or what ``Scale.parse``
            takes); ``None``: the detector's first scale.
    """
    from acfd.deploy.onnx_runner import INPUT_NAME

    first = detector.scales[0]  # a Scale: its class parses the others (deploy sits below predict)
    chosen = first if scale is None else type(first).parse(scale)
    for image in images:
        yield {INPUT_NAME: detector.preprocess([image], chosen).tensor.float().numpy()}


def verifier_calibration_batches(
    images: Iterable[np.ndarray],
    boxes: Iterable[np.ndarray],
    cfg: Any,
) -> Iterator[dict[str, np.ndarray]]:
    """The inputs of the verifier's stage graph (:mod:`acfd.detection.verifier_runtime`) for boxes on
    images, one image per batch, exactly as :meth:`VerifierSession.outputs
    <acfd.detection.verifier_runtime.VerifierSession.outputs>` feeds it: ``{"image": (1, 3, H, W)}``
    the image resized to the verifier's ``long_side`` (float 0-255) and ``{"rois": (K, 4)}`` the
    crop squares of its boxes in those pixels (the graph cuts the crops and runs each with its
    mirror image). Images without boxes give no batch.

    Args:
        images: ``(H, W, 3)`` uint8 RGB arrays (training images).
        boxes: ``(K, 4)`` boxes per image in its pixels, e.g. the detector's boxes above the
            verifier's raw-score floor (what the verifier re-scores).
        cfg: the verifier's :class:`~acfd.detection.verifier_runtime.VerifierConfig`.
    """
    from acfd.detection.verifier_runtime import crop_squares, resized_for_crops

    for image, image_boxes in zip(images, boxes):
        if len(image_boxes) == 0:
            continue
        resized, factor = resized_for_crops(image, cfg)
        chw = np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32)
        yield {"image": chw, "rois": crop_squares(np.asarray(image_boxes), factor, cfg)}


__all__ = [
    "ACTIVATION_TYPES",
    "CALIBRATION_METHODS",
    "DEFAULT_EXCLUDED_OP_TYPES",
    "META_QUANTIZATION",
    "detector_calibration_batches",
    "output_tail",
    "qdq_coverage",
    "quantizable_op_types",
    "quantization_info",
    "quantize_onnx",
    "verifier_calibration_batches",
]
