"""Size-aware score calibration (acfd.detection.calibration, acfd.engine.calibrate, acfd calibrate):
the table, its fit, the Detector's use of it and where it travels (weights file, ONNX export)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from acfd.cli import app
from acfd.detection.calibration import METADATA_KEY, ScoreCalibration, fit_score_calibration
from acfd.engine.calibrate import calibration_samples, save_calibrated_weights
from acfd.predict.detector import Detector
from acfd.predict.modelfile import read_metadata, save_weights
from acfd.predict.scales import Scale


def _table(fn, shape=(6, 5), logits=(-3.0, 3.0), log_sides=(math.log(4), math.log(1024))) -> ScoreCalibration:
    """A calibration whose node (i, j) holds ``fn(raw score, side)`` of that node."""
    ls, lz = np.linspace(*logits, shape[0]), np.linspace(*log_sides, shape[1])
    table = [[fn(1 / (1 + math.exp(-a)), math.exp(b)) for b in lz] for a in ls]
    return ScoreCalibration(logits, log_sides, tuple(map(tuple, table)), "640")


def _square(sides: list[float]) -> torch.Tensor:
    return torch.tensor([[0.0, 0.0, s, s] for s in sides])


def test_calibration_is_exact_at_the_nodes_bilinear_between_and_clamped_outside() -> None:
    cal = _table(lambda p, side: min(1.0, p * (0.5 if side < 50 else 1.0)))
    ls, lz = np.linspace(-3, 3, 6), np.exp(np.linspace(math.log(4), math.log(1024), 5))
    raw = torch.tensor([1 / (1 + math.exp(-ls[3]))] * 2, dtype=torch.float32)
    got = cal(raw, _square([lz[0], lz[4]]))
    assert got.tolist() == pytest.approx([cal.table[3][0], cal.table[3][4]], abs=1e-5)
    # half-way (in logit and log side) between four nodes: their mean
    mid_raw = torch.tensor([1 / (1 + math.exp(-(ls[2] + ls[3]) / 2))])
    mid_side = math.exp((math.log(lz[1]) + math.log(lz[2])) / 2)
    expect = np.mean([cal.table[i][j] for i in (2, 3) for j in (1, 2)])
    assert cal(mid_raw, _square([mid_side])).item() == pytest.approx(expect, abs=1e-5)
    # beyond the grid: the edge value
    assert cal(torch.tensor([0.9999]), _square([5000.0])).item() == pytest.approx(cal.table[-1][-1], abs=1e-5)
    assert cal(torch.tensor([1e-5]), _square([1.0])).item() == pytest.approx(cal.table[0][0], abs=1e-5)
    assert cal(torch.zeros(0), torch.zeros(0, 4)).shape == (0,)


def test_raw_score_floor_loses_nothing_the_threshold_keeps() -> None:
    cal = _table(lambda p, side: p ** (2.0 if side < 100 else 1.0))
    raw = torch.linspace(0.001, 0.999, 2000).repeat(3)
    sides = torch.tensor([8.0, 120.0, 900.0]).repeat_interleave(2000)
    calibrated = cal(raw, _square(sides.tolist()))
    for thresh in (0.0, 0.1, 0.3, 0.45, 0.8):
        floor = cal.raw_score_floor(thresh)
        assert not bool((calibrated[raw <= floor] > thresh).any()), thresh
        assert bool((calibrated[raw > floor] > thresh).any()) or thresh >= max(map(max, cal.table))
    assert cal.raw_score_floor(1.0) == 1.0  # nothing calibrates above 1


def test_calibration_checks_its_table_and_round_trips_json() -> None:
    cal = _table(lambda p, side: p)
    again = ScoreCalibration.from_json(cal.to_json())
    assert again.reference_scale == "640" and np.allclose(again.table, cal.table, atol=1e-5)
    with pytest.raises(ValueError, match="decrease"):
        ScoreCalibration((-1.0, 1.0), (0.0, 1.0), ((0.9, 0.9), (0.1, 0.1)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ScoreCalibration((-1.0, 1.0), (0.0, 1.0), ((0.0, 0.0), (1.5, 1.0)))
    with pytest.raises(ValueError, match="increasing"):
        ScoreCalibration((1.0, -1.0), (0.0, 1.0), ((0.0, 0.0), (1.0, 1.0)))
    with pytest.raises(ValueError, match="w.safetensors: not a valid score calibration"):
        ScoreCalibration.from_json('{"table": [[0.1]]}', "w.safetensors")
    assert ScoreCalibration.from_metadata({}, "w") is None


def test_fit_learns_that_small_boxes_are_less_often_faces() -> None:
    rng = np.random.default_rng(0)
    n = 6000
    scores = rng.uniform(0.08, 1.0, n)
    sides = np.exp(rng.uniform(math.log(8), math.log(400), n))
    precision = scores * np.where(sides < 40, 0.3, 0.9)  # the same raw score is worth less when small
    is_tp = rng.uniform(size=n) < precision
    cal = fit_score_calibration(scores, sides, is_tp, reference_scale="560", fitted_on="synthetic")
    assert cal.reference_scale == "560" and cal.fitted_on == "synthetic"
    t = np.asarray(cal.table)
    assert (np.diff(t, axis=0) >= 0).all() and t.min() >= 0 and t.max() <= 1
    got = cal(torch.tensor([0.7, 0.7]), _square([15.0, 200.0]))
    assert got[0] < 0.35 < 0.5 < got[1]  # ~0.21 and ~0.63
    with pytest.raises(ValueError, match="both true and false"):
        fit_score_calibration(scores, sides, np.ones(n, bool))
    with pytest.raises(ValueError, match="labels"):
        fit_score_calibration(scores, sides[:10], is_tp)


# --------------------------------------------------------------------------------------------
# the Detector


@pytest.fixture(scope="module")
def tiny_model(spread_tiny_model: torch.nn.Module) -> torch.nn.Module:
    return spread_tiny_model


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (120, 200, 3), dtype=np.uint8)


def _by_box(boxes: np.ndarray, scores: np.ndarray) -> dict[tuple, float]:
    return {tuple(np.round(b, 3)): float(s) for b, s in zip(boxes, scores)}


def test_detector_reports_calibrated_scores_of_the_raw_boxes(tiny_model, image) -> None:
    cal = _table(lambda p, side: p * (0.2 if side < 60 else 1.0))
    raw = Detector(tiny_model, scales="160", score_thresh=0.0, calibration=None)(image)
    calibrated = Detector(tiny_model, scales="160", score_thresh=0.0, calibration=cal)(image)
    assert len(raw) > 5 and len(calibrated) == len(raw)  # the same boxes (NMS ranks by raw scores) ...
    ratio = math.sqrt(np.prod(Scale.parse("640").target_size(120, 200)) / (120 * 200))  # the reference scale's pixels
    expect = cal(torch.from_numpy(raw.scores), torch.from_numpy(raw.boxes) * ratio).numpy()
    assert _by_box(calibrated.boxes, calibrated.scores) == pytest.approx(_by_box(raw.boxes, expect), abs=1e-5)
    assert np.all(np.diff(calibrated.scores) <= 0)  # ... re-ranked by calibrated score
    thresholded = Detector(tiny_model, scales="160", score_thresh=0.3, calibration=cal)(image)
    assert np.all(thresholded.scores > 0.3)
    assert len(thresholded) == int((calibrated.scores > 0.3).sum())  # the threshold is on calibrated scores


def test_raw_score_floor_applies_to_network_scores(tiny_model, image) -> None:
    base = Detector(tiny_model, scales="160", score_thresh=0.7, calibration=None)(image)
    floored = Detector(tiny_model, scales="160", score_thresh=0.0, raw_score_floor=0.7, calibration=None)(image)
    assert len(base) > 0 and np.array_equal(base.boxes, floored.boxes)
    ev = Detector.for_evaluation(tiny_model)
    assert (ev.score_thresh, ev.raw_score_floor) == (0.0, 0.08)  # the paper's floor, every calibrated score kept
    with pytest.raises(ValueError, match="raw_score_floor"):
        Detector(tiny_model, raw_score_floor=2.0)
    with pytest.raises(ValueError, match="calibration must be"):
        Detector(tiny_model, calibration="yes")


def test_calibration_travels_with_the_weights_and_the_onnx_export(tiny_model, image, tmp_path: Path) -> None:
    cal = _table(lambda p, side: p * 0.5)
    plain = save_weights(tiny_model, tmp_path / "tiny.safetensors")
    digest = hashlib.sha256(plain.read_bytes()).hexdigest()
    out = save_calibrated_weights(plain, cal, tmp_path / "tiny-cal.safetensors")
    assert hashlib.sha256(plain.read_bytes()).hexdigest() == digest  # the input is never changed
    assert Detector(plain, backend="torch").calibration is None
    det = Detector(out, backend="torch", scales="160", score_thresh=0.0)
    assert det.calibration == ScoreCalibration.from_json(cal.to_json())
    assert Detector(out, backend="torch", calibration=None).calibration is None
    meta = read_metadata(out)
    assert meta["model"] == "acfd-tiny" and METADATA_KEY in meta
    # the weights load as before; the scores are halved (within the grid)
    raw = Detector(plain, backend="torch", scales="160", score_thresh=0.0)(image)
    got = det(image)
    assert len(got) == len(raw)
    inside = (raw.scores > 0.06) & (raw.scores < 0.94)
    assert _by_box(got.boxes[inside], got.scores[inside]) == pytest.approx(
        _by_box(raw.boxes[inside], raw.scores[inside] / 2), abs=0.02)
    # acfd export carries it into the .onnx metadata; a Detector on the .onnx file uses it
    onnx_path = tmp_path / "tiny-cal.onnx"
    result = CliRunner().invoke(app, ["export", str(out), "-o", str(onnx_path), "--size", "128x128"])
    assert result.exit_code == 0, result.output
    assert Detector(onnx_path).calibration == det.calibration
    assert Detector(onnx_path, calibration=None).calibration is None
    with pytest.raises(ValueError, match="not a valid score calibration"):
        save_weights(tiny_model, tmp_path / "bad.safetensors", extra={METADATA_KEY: "{}"})
        Detector(tmp_path / "bad.safetensors", backend="torch")


def test_detect_cli_reports_calibrated_scores_unless_told_not_to(tiny_model, image, tmp_path: Path) -> None:
    import json

    from PIL import Image

    out = save_calibrated_weights(save_weights(tiny_model, tmp_path / "tiny.safetensors"),
                                  _table(lambda p, side: p * 0.5), tmp_path / "tiny-cal.safetensors")
    Image.fromarray(image).save(tmp_path / "a.png")
    scores = {}
    for flag in ("--calibration", "--no-calibration"):
        res = CliRunner().invoke(app, ["detect", str(tmp_path / "a.png"), "--weights", str(out), "--scales", "160",
                                       "--score-thresh", "0", "--format", "json", "-o", str(tmp_path / f"{flag}.json"),
                                       "--no-progress", flag])
        assert res.exit_code == 0, res.output
        faces = json.loads((tmp_path / f"{flag}.json").read_text())[0]["detections"]
        scores[flag] = sorted(f["score"] for f in faces)
    assert len(scores["--calibration"]) == len(scores["--no-calibration"]) > 0
    assert max(scores["--calibration"]) <= 0.5 < max(scores["--no-calibration"])


def test_calibration_samples_label_with_the_official_matching(tmp_path: Path) -> None:
    from PIL import Image

    from acfd.data.formats import ImageRecord

    Image.new("RGB", (1280, 720)).save(tmp_path / "a.jpg")  # longer side 1280: the 640 scale halves it
    gt = {"a.jpg": ImageRecord("a.jpg", np.array([[100, 100, 200, 200]], np.float32))}
    pred = {"a.jpg": ImageRecord("a.jpg", np.array([[100, 100, 200, 200], [102, 101, 200, 200], [500, 500, 540, 540]], np.float32),
                                 np.array([0.5, 0.9, 0.3], np.float32))}
    scores, sides, is_tp = calibration_samples(pred, gt, tmp_path, "640")
    assert scores.tolist() == pytest.approx([0.9, 0.5, 0.3])  # score order: the 0.9 box takes the face
    assert is_tp.tolist() == [True, False, False]
    assert sides.tolist() == pytest.approx([math.sqrt(98 * 99) / 2, 50.0, 20.0])


# --------------------------------------------------------------------------------------------
# acfd calibrate


def test_calibrate_cli_writes_calibrated_weights_and_keeps_the_input(samples_dir: Path, tmp_path: Path) -> None:
    from acfd.predict.modelfile import default_weights_path

    src = default_weights_path()
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "cal.safetensors"
    result = CliRunner().invoke(app, ["calibrate", str(src), "--gt", str(samples_dir / "annotations.csv"),
                                      "--images", str(samples_dir), "-o", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "calibrated on" in result.output and "on faces" in result.output
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest
    cal = Detector(out).calibration
    assert cal is not None and "5 images" in cal.fitted_on
    faces = Detector(out, score_thresh=0.0)(samples_dir / "personai_icartoonface_dettrain_00330.jpg")
    assert len(faces) and faces.scores.min() >= 0 and faces.scores.max() <= 1


def test_calibrate_cli_errors_name_the_file(samples_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    pt = tmp_path / "w.pt"
    pt.write_bytes(b"x")
    result = runner.invoke(app, ["calibrate", str(pt), "--gt", str(samples_dir / "annotations.csv"),
                                 "--images", str(samples_dir), "-o", str(tmp_path / "o.safetensors")])
    assert result.exit_code != 0 and f"{pt}: a calibration is stored in a .safetensors" in result.output
    result = runner.invoke(app, ["calibrate", str(tmp_path / "missing.safetensors"), "--gt", str(samples_dir / "annotations.csv"),
                                 "--images", str(samples_dir), "-o", str(tmp_path / "o.safetensors")])
    assert result.exit_code != 0 and "missing.safetensors: weights file not found" in result.output
