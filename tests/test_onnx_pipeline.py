"""The torch-free ONNX pipeline: the same boxes as Detector, the shipped graphs in step with the
shipped weights, and `acfd detect` on an image without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import nms as tv_nms

from acfd.config import WEIGHTS_DIR
from acfd.data.image_io import load_image
from acfd.detection.anchors import AnchorGenerator
from acfd.detection.box_coder import BoxCoder
from acfd.predict.detector import Detector
from acfd.predict.onnx_pipeline import (
    OnnxPipeline,
    decode_boxes,
    grid_anchors,
    nms,
    open_pipeline,
    shipped_graphs,
)
from acfd.utils import default_threads, file_sha256

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "samples").glob("*.jpg"))


def test_nms_decode_and_anchors_match_torchvision_and_the_model() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 200, (300, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(5, 60, (300, 2)).astype(np.float32)], 1)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    for thresh in (0.3, 0.45, 0.7):
        expected = tv_nms(torch.from_numpy(boxes), torch.from_numpy(scores), thresh).numpy()
        np.testing.assert_array_equal(nms(boxes, scores, thresh), expected)
        np.testing.assert_array_equal(nms(boxes, scores, thresh, max_keep=5), expected[:5])
    gen = AnchorGenerator((4, 8, 16, 32, 64, 128), 4.0)
    anchors = grid_anchors((4, 8, 16, 32, 64, 128), 4.0, 384, 640)
    np.testing.assert_array_equal(anchors, gen(384, 640).numpy())
    deltas = rng.normal(0, 2, (len(anchors), 4)).astype(np.float32)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    np.testing.assert_allclose(decode_boxes(deltas, anchors, coder.weights, coder.clip),
                               coder.decode(torch.from_numpy(deltas), gen(384, 640)).numpy(), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("settings", [{}, {"verifier": None}, {"calibration": None, "verifier": None},
                                      {"score_thresh": 0.05, "nms_thresh": 0.6}, {"preset": "evaluation"},
                                      {"flip": True, "scales": "480,640:max200", "agreement_iou": 0.6}])
def test_the_pipeline_finds_what_detector_finds(settings: dict) -> None:
    images = [load_image(p) for p in SAMPLES]
    pipeline = open_pipeline(**settings)
    assert isinstance(pipeline, OnnxPipeline)
    reference = Detector(**settings)
    assert reference.pipeline is not None  # Detector() runs the same pipeline over its own sessions ...
    reference.pipeline = None  # ... so compare with its PyTorch post-processing instead
    ours, theirs = pipeline.detect_arrays(images), reference.detect_arrays(images)
    assert sum(len(d) for d in theirs) > 0
    for a, b in zip(ours, theirs):
        assert len(a) == len(b) and a.image_size == b.image_size
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)
    assert pipeline.timings.images == len(images) and pipeline.timings.forward > 0


def test_the_shipped_graphs_are_exported_from_the_shipped_weights() -> None:
    """Retrained weights need `acfd export -o src/acfd/weights/acfd-n.onnx` (else the command line
    silently falls back to the slower torch path)."""
    graph, stage = shipped_graphs()
    assert graph.is_file() and stage.is_file()
    fingerprint = file_sha256(WEIGHTS_DIR / "acfd-n.safetensors")[:16]
    pipeline = OnnxPipeline.open(graph, stage, presets_beside=WEIGHTS_DIR / "acfd-n.safetensors")
    assert pipeline.metadata["acfd_source_weights"] == fingerprint
    assert pipeline.verifier is not None and pipeline.verifier.detector == fingerprint
    assert pipeline.preset == Detector(verifier=None).preset  # the presets file beside the weights ...
    evaluation = OnnxPipeline.open(graph, stage, "evaluation", presets_beside=WEIGHTS_DIR / "acfd-n.safetensors")
    assert evaluation.preset == Detector.for_evaluation(verifier=None).preset  # ... and in the graph's metadata


@pytest.mark.parametrize("settings", [{"weights": "x.safetensors"}, {"half": True}, {"device": "cuda"},
                                      {"model": "acfd-s"}, {"verifier": "other.safetensors"}])
def test_settings_the_pipeline_cannot_run_go_to_detector(settings: dict) -> None:
    assert open_pipeline(**settings) is None


def test_detector_uses_the_pipeline_for_one_view_on_onnx_runtime_only() -> None:
    assert Detector(threads=1).pipeline is not None
    assert Detector(threads=1).pipeline.runner.num_threads == 1
    assert Detector(backend="torch").pipeline is None
    with pytest.raises(ValueError, match="threads must be >= 1"):
        Detector(threads=0)


def test_an_export_without_a_stage_graph_runs_without_verifier(tmp_path: Path) -> None:
    graph, _ = shipped_graphs()
    copy = tmp_path / "model.onnx"
    copy.write_bytes(graph.read_bytes())
    pipeline = open_pipeline(str(copy))
    assert pipeline is not None and pipeline.verifier is None and pipeline.calibration is not None
    with pytest.raises(ValueError, match="unknown preset"):
        OnnxPipeline.open(copy, None, "fast")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="broken.onnx: cannot load ONNX model"):
        OnnxPipeline.open(broken, None)


def test_threads_default_to_the_cores_this_process_may_use() -> None:
    assert default_threads() == len(__import__("os").sched_getaffinity(0))
    assert open_pipeline(threads=1).threads == 1


def test_detect_on_an_image_never_imports_torch(tmp_path: Path) -> None:
    code = (
        "import sys, json\n"
        "from typer.testing import CliRunner\n"
        "from acfd.cli import app\n"
        f"r = CliRunner().invoke(app, ['detect', {str(SAMPLES[0])!r}, '--save-images', {str(tmp_path / 'drawn')!r}, "
        f"'-o', {str(tmp_path / 'faces.json')!r}])\n"
        "print(json.dumps({'code': r.exit_code, 'out': r.output, "
        "'torch': sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))}))\n"
    )
    result = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert result["code"] == 0, result["out"]
    assert result["torch"] == []
    assert len(json.loads((tmp_path / "faces.json").read_text())[0]["detections"]) == 3
    assert len(list((tmp_path / "drawn").glob("*.jpg"))) == 1


def test_threads_option_of_detect_and_eval(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from acfd.cli import app

    ok = CliRunner().invoke(app, ["detect", str(SAMPLES[0]), "--threads", "1"])
    assert ok.exit_code == 0 and "3 faces" in ok.output
    bad = CliRunner().invoke(app, ["detect", str(SAMPLES[0]), "--threads", "0"])
    assert bad.exit_code == 2 and "--threads" in bad.output
    assert "--threads" in CliRunner().invoke(app, ["eval", "--help"]).output


def test_the_verifier_crops_from_the_detector_input_when_it_has_its_size() -> None:
    from acfd.detection.verifier_runtime import resized_for_crops

    pipeline = open_pipeline()
    image = load_image(SAMPLES[0])
    boxes = np.array([[136.0, 258.0, 298.0, 390.0], [374.0, 111.0, 517.0, 244.0]])
    resized, _ = resized_for_crops(image, pipeline.verifier.cfg)
    plain = pipeline.verifier.outputs(image, boxes)
    np.testing.assert_array_equal(pipeline.verifier.outputs(image, boxes, resized), plain)
    wrong = np.zeros((10, 10, 3), np.uint8)  # not the size it would crop from: ignored
    np.testing.assert_array_equal(pipeline.verifier.outputs(image, boxes, wrong), plain)


def test_detector_uses_the_shipped_graphs_without_exporting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACFD_CACHE_DIR", str(tmp_path / "cache"))
    graph, stage = shipped_graphs()
    for precision, path in (("float32", graph), ("int8", graph.with_name("acfd-n-int8.onnx"))):
        det = Detector(precision=precision)
        assert det.backend.path == path and det.verifier.session.source == str(stage)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
