"""int8 inference on the CPU: the shipped int8 graph, the precision choice, and its boxes close to float32's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from acfd.cli import app
from acfd.config import WEIGHTS_DIR
from acfd.data.image_io import load_image
from acfd.deploy import precision as precision_module
from acfd.deploy.precision import check_precision, float_graph_stem, int8_graph_path, resolve_precision
from acfd.predict.detector import Detector
from acfd.predict.modelfile import ModelFile, onnx_metadata, verifier_path
from acfd.predict.onnx_pipeline import box_iou, open_pipeline, shipped_graphs
from acfd.utils import file_sha256

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "samples").glob("*.jpg"))
INT8_GRAPH = WEIGHTS_DIR / "acfd-n-int8.onnx"


def test_names_of_int8_graphs_and_their_verifier() -> None:
    assert int8_graph_path("w/acfd-n.onnx") == Path("w/acfd-n-int8.onnx")
    assert float_graph_stem("w/acfd-n-int8.onnx") == float_graph_stem("acfd-n.onnx") == "acfd-n"
    assert verifier_path("w/acfd-n-int8.onnx") == verifier_path("w/acfd-n.onnx") == Path("w/acfd-n-verifier.safetensors")
    assert verifier_path("w/x-int8.safetensors") == Path("w/x-int8-verifier.safetensors")


def test_auto_is_int8_only_on_cpus_with_int8_dot_products(monkeypatch: pytest.MonkeyPatch) -> None:
    for has, expected in ((True, "int8"), (False, "float32")):
        monkeypatch.setattr(precision_module, "cpu_has_int8_dot", lambda has=has: has)
        assert resolve_precision("auto") == expected
        assert resolve_precision("float32") == "float32" and resolve_precision("int8") == "int8"
    with pytest.raises(ValueError, match="precision must be one of auto, float32, int8"):
        check_precision("fp16")


def test_the_shipped_int8_graph_is_made_from_the_shipped_weights() -> None:
    """Retrained weights need `acfd export -o src/acfd/weights/acfd-n.onnx --int8 TRAIN_IMAGES`."""
    meta = onnx_metadata(INT8_GRAPH)
    assert meta["acfd_source_weights"] == file_sha256(WEIGHTS_DIR / "acfd-n.safetensors")[:16]
    info = json.loads(meta["quantization"])
    assert info["dtype"] == "int8" and info["source_sha256"] == file_sha256(shipped_graphs()[0])
    assert ModelFile.open(None).int8_onnx() == INT8_GRAPH


#: int8 kernels without dot-product instructions (AVX2 only) may saturate: there int8 only has to run
INT8_EXACT = precision_module.cpu_has_int8_dot()


def test_int8_finds_the_faces_float32_finds() -> None:
    images = [load_image(p) for p in SAMPLES]
    fp32, int8 = Detector(precision="float32"), Detector(precision="int8")
    assert (fp32.precision, int8.precision) == ("float32", "int8")
    assert "precision='int8'" in repr(int8)
    found = int8.detect_arrays(images)
    assert sum(len(d) for d in found) > 0
    if not INT8_EXACT:
        pytest.skip("this CPU has no int8 dot products: int8 ran, its boxes are not compared")
    for a, b in zip(fp32.detect_arrays(images), found):
        assert len(a) == len(b)
        if len(a):
            assert box_iou(a.boxes, b.boxes).max(axis=1).min() > 0.9
            np.testing.assert_allclose(np.sort(a.scores), np.sort(b.scores), atol=0.05)
    pipeline = open_pipeline(precision="int8")
    assert pipeline is not None and pipeline.runner.path == INT8_GRAPH


def test_int8_needs_an_int8_graph_and_the_onnx_runtime_backend(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ONNX Runtime backend"):
        Detector(backend="torch", precision="int8")
    import torch

    from acfd.predict.backends import onnx_backend

    with pytest.raises(ValueError, match="on the CPU"):  # a GPU gets an error, not float32 (no GPU needed to check)
        onnx_backend("auto", None, ModelFile.open(None), torch.device("cuda"), False, precision="int8")
    weights = tmp_path / "copy.safetensors"
    weights.write_bytes((WEIGHTS_DIR / "acfd-n.safetensors").read_bytes())
    with pytest.raises(ValueError, match="copy.safetensors: no int8 graph made from these weights"):
        Detector(weights, verifier=None, precision="int8")
    assert Detector(weights, verifier=None).precision == "float32"  # auto: float32 when there is none
    with pytest.raises(ValueError, match="precision must be one of"):
        Detector(precision="half")


def test_precision_option_of_detect_and_eval() -> None:
    ok = CliRunner().invoke(app, ["detect", str(SAMPLES[0]), "--precision", "int8"])
    assert ok.exit_code == 0 and ("3 faces" in ok.output or not INT8_EXACT)
    bad = CliRunner().invoke(app, ["detect", str(SAMPLES[0]), "--precision", "fp16"])
    assert bad.exit_code == 2 and "--precision" in bad.output
    assert "--precision" in CliRunner().invoke(app, ["eval", "--help"]).output


@pytest.mark.slow
def test_export_writes_an_int8_graph_that_detect_runs(tmp_path: Path) -> None:
    listed = tmp_path / "calibration.txt"
    listed.write_text("\n".join(str(p) for p in SAMPLES) + "\n")
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(app, ["export", "-o", str(out), "--int8", str(listed), "--int8-images", "2", "--no-check"])
    assert result.exit_code == 0, result.output
    int8 = tmp_path / "model-int8.onnx"
    assert int8.is_file() and "int8: " in result.output and "calibrated on 2 images" in result.output
    assert json.loads(onnx_metadata(int8)["quantization"])["calibration_batches"] == 2
    detect = CliRunner().invoke(app, ["detect", str(SAMPLES[0]), "--model", str(int8)])
    assert detect.exit_code == 0 and ("3 faces" in detect.output or not INT8_EXACT)  # the verifier beside model.onnx
    missing = CliRunner().invoke(app, ["export", "-o", str(tmp_path / "b.onnx"), "--int8", str(tmp_path / "nope")])
    assert missing.exit_code != 0 and "--int8" in missing.output and "nope" in missing.output


def test_the_service_runs_the_precision_it_is_given() -> None:
    from pydantic import ValidationError

    from acfd.serve.service import default_detector_factory
    from acfd.serve.settings import ServeSettings

    assert default_detector_factory(ServeSettings(precision="int8", threads=1)).precision == "int8"
    assert default_detector_factory(ServeSettings(precision="float32", threads=1)).precision == "float32"
    with pytest.raises(ValidationError, match="precision"):
        ServeSettings(precision="fp16")
    assert "--precision" in CliRunner().invoke(app, ["serve", "--help"]).output
