"""Static INT8 quantization (acfd.deploy.quantize): a tiny detector graph and a tiny verifier stage
graph quantize to QDQ graphs that ONNX Runtime runs, keep their metadata, and stay close to float32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from acfd.data.image_io import load_image
from acfd.deploy.export import export_onnx
from acfd.deploy.onnx_runner import OnnxRunner
from acfd.deploy.quantize import (
    META_QUANTIZATION,
    detector_calibration_batches,
    output_tail,
    qdq_coverage,
    quantization_info,
    quantize_onnx,
    verifier_calibration_batches,
)
from acfd.detection.verifier import BoxVerifier, FaceVerifier, get_verifier_config
from acfd.detection.verifier_runtime import VerifierSession, VerifierStacking
from acfd.models import create_model
from acfd.predict.detector import Detector

SCALE = "256"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """acfd-tiny with GroupNorm in its head (as the shipped acfd-n), exported to ONNX; its face
    logits spread over several units (random weights alone give nearly the prior everywhere)."""
    torch.manual_seed(0)
    model = create_model("acfd-tiny", **{"head.norm": "gn"}).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.out_channels == 1:  # the classification conv
            m.bias.data.zero_()
            m.weight.data.mul_(10.0)
    path = export_onnx(model, tmp_path_factory.mktemp("q") / "tiny.onnx", sample_size=(128, 128),
                       metadata={"note": "kept"})
    return model, path


@pytest.fixture(scope="module")
def sample_images(samples_dir: Path) -> list[np.ndarray]:
    return [load_image(p) for p in sorted(samples_dir.glob("*.jpg"))]


@pytest.fixture(scope="module")
def quantized(tiny: tuple[torch.nn.Module, Path], sample_images: list[np.ndarray]) -> tuple[Path, Detector]:
    """The tiny graph quantized (default settings: its output tail in float32) on all sample
    images but the last (kept for the comparison)."""
    model, path = tiny
    det = Detector(model, verifier=None, backend="torch", scales=SCALE)
    out = quantize_onnx(path, path.with_name("tiny-int8.onnx"),
                        detector_calibration_batches(det, sample_images[:-1]), calibrated_on="sample images")
    return out, det


def _outputs(path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return OnnxRunner(path, providers=["CPUExecutionProvider"], num_threads=1)(x)


def test_quantized_graph_runs_in_int8_and_stays_close_to_float32(
    tiny: tuple[torch.nn.Module, Path], quantized: tuple[Path, Detector], sample_images: list[np.ndarray]
) -> None:
    out, det = quantized
    proto = onnx.load(str(out))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    coverage = qdq_coverage(proto)
    last_convs = [n for n in output_tail(tiny[1]) if n.endswith("/Conv")]
    # every conv but the heads' last ones in a DQ -> Conv -> Q group
    assert coverage["Conv"][0] == coverage["Conv"][1] - len(last_convs) > 0
    assert coverage["InstanceNormalization"][0] == 0  # the GroupNorm stays float32
    consumed_by_q = {n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    assert not consumed_by_q & {o.name for o in proto.graph.output}  # the outputs are not rounded
    weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights  # int8 weights stored
    assert qdq_coverage(tiny[1]).get("Conv", (0, 0))[0] == 0  # the float32 source has no QDQ group

    x = next(detector_calibration_batches(det, sample_images[-1:]))["images"]  # not calibrated on
    ref, got = _outputs(tiny[1], x), _outputs(out, x)
    for r, g in zip(ref, got):  # face logits, box deltas
        assert g.shape == r.shape and np.isfinite(g).all()
        # 8-bit rounding through a random network: small against how the outputs vary over the
        # image (0.98 and 0.1-0.15 measured; another image's logits correlate 0.7 with these)
        assert np.corrcoef(r.ravel(), g.ravel())[0, 1] > 0.95
        assert float(np.abs(g - r).mean()) < 0.25 * float(r.std())


def test_metadata_is_kept_and_says_int8(tiny: tuple[torch.nn.Module, Path], quantized: tuple[Path, Detector],
                                        sample_images: list[np.ndarray]) -> None:
    out, _ = quantized
    source = {p.key: p.value for p in onnx.load(str(tiny[1])).metadata_props}
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert {k: props[k] for k in source} == source  # the model config, the extra entry...
    info = quantization_info(out)
    assert info == json.loads(props[META_QUANTIZATION])
    assert info["dtype"] == "int8" and info["format"] == "QDQ" and info["activations"] == "quint8"
    assert info["calibrated_on"] == "sample images" and info["calibration_batches"] == len(sample_images) - 1
    assert info["excluded_op_types"] == ["InstanceNormalization"]  # the excluded types the graph has
    assert quantization_info(tiny[1]) is None
    # the detector reads the config from the quantized file as from any export
    det = Detector(out, verifier=None, scales=SCALE)
    assert det.cfg == tiny[0].cfg and det.backend_name == "onnx"
    found = det(sample_images[0])
    assert found.boxes.shape[1:] == (4,)


def test_output_tail(tiny: tuple[torch.nn.Module, Path], quantized: tuple[Path, Detector]) -> None:
    tail = output_tail(tiny[1])
    last = [n for n in tail if n.endswith("/Conv")]
    assert last and all(("cls_logits" in n or "bbox_pred" in n) for n in last)  # the heads' last convs...
    assert any("Concat" in n for n in tail)  # ... and the concatenation of their levels
    assert not any("subnet" in n for n in tail)  # not the layers before them
    # stored: the tail of the graph as quantized (constants folded: a few shape computations fewer)
    assert set(last) <= set(quantization_info(quantized[0])["excluded_nodes"]) <= set(tail)


def test_other_settings_all_in_int8(tiny: tuple[torch.nn.Module, Path], quantized: tuple[Path, Detector],
                                    sample_images: list[np.ndarray], tmp_path: Path) -> None:
    _, det = quantized
    # batches of two input sizes (the histogram calibrators must take them one by one)
    batches = [*detector_calibration_batches(det, sample_images[:1]), *detector_calibration_batches(det, sample_images[1:2], "384")]
    assert batches[0]["images"].shape != batches[1]["images"].shape
    out = quantize_onnx(tiny[1], tmp_path / "all.onnx", batches,
                        float_outputs=False, calibration_method="percentile", activation_type="qint8")
    proto = onnx.load(str(out))
    quantized_convs, convs = qdq_coverage(proto)["Conv"]
    assert quantized_convs == convs
    consumed_by_q = {n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    producer = {o: n for n in proto.graph.node for o in n.output}
    assert all(producer[o.name].op_type == "DequantizeLinear" for o in proto.graph.output)  # rounded outputs
    assert consumed_by_q
    info = quantization_info(proto)
    assert info["excluded_nodes"] == []
    assert info["calibration"] == "percentile 99.999" and info["activations"] == "qint8"
    x = batches[0]["images"]
    ref, got = _outputs(tiny[1], x), _outputs(out, x)
    assert all(np.corrcoef(r.ravel(), g.ravel())[0, 1] > 0.9 for r, g in zip(ref, got))


def test_bad_arguments_are_one_line_errors(tiny: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    path = tiny[1]
    batch = [{"images": np.zeros((1, 3, 128, 128), np.float32)}]
    with pytest.raises(ValueError, match="must not overwrite its source"):
        quantize_onnx(path, path, batch)
    with pytest.raises(ValueError, match="lacks input"):
        quantize_onnx(path, tmp_path / "x.onnx", [{"crops": batch[0]["images"]}])
    with pytest.raises(ValueError, match="no calibration batch"):
        quantize_onnx(path, tmp_path / "x.onnx", [])
    with pytest.raises(ValueError, match="activation_type"):
        quantize_onnx(path, tmp_path / "x.onnx", batch, activation_type="int4")
    with pytest.raises(ValueError, match="calibration_method"):
        quantize_onnx(path, tmp_path / "x.onnx", batch, calibration_method="entropy")
    with pytest.raises(FileNotFoundError):
        quantize_onnx(tmp_path / "missing.onnx", tmp_path / "x.onnx", batch)
    assert not (tmp_path / "x.onnx").exists()


def test_verifier_stage_graph_quantizes(sample_images: list[np.ndarray], tmp_path: Path) -> None:
    torch.manual_seed(0)
    verifier = BoxVerifier(FaceVerifier(get_verifier_config("r4-tiny")).eval(), VerifierStacking(1.0, 1.0, 0.0))
    source = verifier.export_stage(tmp_path / "stage.onnx")
    rng = np.random.default_rng(0)

    def boxes(image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        xy = rng.uniform(0, 0.6, (6, 2)) * (w, h)
        side = rng.uniform(0.1, 0.35, (6, 1)) * min(h, w)
        return np.hstack([xy, xy + side]).astype(np.float32)

    calib = sample_images[:-1]
    batches = list(verifier_calibration_batches(calib, [boxes(im) for im in calib], verifier.cfg))
    assert set(batches[0]) == {"image", "rois"} and batches[0]["rois"].shape == (6, 4)
    out = quantize_onnx(source, tmp_path / "stage-int8.onnx", batches)
    assert qdq_coverage(out)["Conv"][0] > 0
    fp32, int8 = VerifierSession(source, 1), VerifierSession(out, 1)  # the verifier's metadata is kept
    assert int8.cfg == verifier.cfg and int8.stacking == verifier.stacking
    image = sample_images[-1]
    test_boxes = boxes(image)
    ref, got = fp32.outputs(image, test_boxes), int8.outputs(image, test_boxes)
    assert got.shape == ref.shape == (6, 5)
    assert float(np.abs(got - ref).mean()) < 0.15 * float(ref.std()) + 1e-3
    assert len(list(verifier_calibration_batches([image], [np.zeros((0, 4))], verifier.cfg))) == 0
