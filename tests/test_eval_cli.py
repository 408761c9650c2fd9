"""``acfd eval`` through CliRunner, on a private Typer app (other command modules may not exist)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from acfd.cli.eval_cmd import register

GT_ROWS = [
    "img1.jpg,10,10,109,109,face",
    "img1.jpg,200,10,299,109,face",
    "img2.jpg,10,10,59,119,face",
]
PERFECT_PRED = [
    "img1.jpg,10,10,109,109,face,0.9",
    "img1.jpg,200,10,299,109,face,0.8",
    "img2.jpg,10,10,59,119,face,0.7",
]


@pytest.fixture()
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # keeps "eval" a subcommand
        pass

    register(app)
    return app


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines()]


def test_perfect_prediction_prints_ap50_100(app: typer.Typer, tmp_path: Path) -> None:
    gt = _write(tmp_path / "gt.csv", GT_ROWS)
    pred = _write(tmp_path / "pred.csv", PERFECT_PRED)
    result = CliRunner().invoke(app, ["eval", str(pred), "--gt", str(gt)])
    assert result.exit_code == 0, result.output
    lines = _lines(result.stdout)
    assert "AP50 100.00%" in lines
    assert any(ln.startswith("COCO AP 100.00") for ln in lines)
    assert any(ln.startswith("all faces") for ln in lines)
    assert any(ln.startswith("aspect h/w>2 or <0.5") for ln in lines)  # img2's 50x110 face


def test_missing_gt_file_fails(app: typer.Typer, tmp_path: Path) -> None:
    pred = _write(tmp_path / "pred.csv", PERFECT_PRED)
    result = CliRunner().invoke(app, ["eval", str(pred), "--gt", str(tmp_path / "nope.csv")])
    assert result.exit_code != 0
    assert "nope.csv" in result.output


def test_missing_prediction_file_fails(app: typer.Typer, tmp_path: Path) -> None:
    gt = _write(tmp_path / "gt.csv", GT_ROWS)
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "none.csv"), "--gt", str(gt)])
    assert result.exit_code == 1
    assert "none.csv" in result.output


def test_csv_errors_are_reported_and_evaluation_goes_on(app: typer.Typer, tmp_path: Path) -> None:
    gt = _write(tmp_path / "gt.csv", GT_ROWS)
    pred = _write(tmp_path / "pred.csv", [PERFECT_PRED[0], "img1.jpg,oops,1,2,3,face,0.5", *PERFECT_PRED[1:]])
    result = CliRunner().invoke(app, ["eval", str(pred), "--gt", str(gt), "--no-coco"])
    assert result.exit_code == 0, result.output
    assert f"{pred}:2:" in result.output
    assert "AP50 100.00%" in _lines(result.stdout)
    assert not any(ln.startswith("COCO") for ln in _lines(result.stdout))


def test_split_restricts_gt_and_predictions(app: typer.Typer, tmp_path: Path) -> None:
    gt = _write(tmp_path / "gt.csv", GT_ROWS)
    pred = _write(tmp_path / "pred.csv", PERFECT_PRED[:2])  # img2 missed
    split = _write(tmp_path / "dev.txt", ["img1.jpg"])
    full = CliRunner().invoke(app, ["eval", str(pred), "--gt", str(gt), "--no-coco"])
    assert "AP50 66.67%" in _lines(full.stdout)
    part = CliRunner().invoke(app, ["eval", str(pred), "--gt", str(gt), "--split", str(split), "--no-coco"])
    assert part.exit_code == 0, part.output
    assert "AP50 100.00%" in _lines(part.stdout)


def test_json_and_plot_outputs(app: typer.Typer, tmp_path: Path) -> None:
    gt = _write(tmp_path / "gt.csv", GT_ROWS)
    pred = _write(tmp_path / "pred.csv", PERFECT_PRED[:1] + ["img9.jpg,0,0,10,10,face,0.99"])
    out_json, out_png = tmp_path / "out" / "m.json", tmp_path / "out" / "pr.png"
    result = CliRunner().invoke(
        app, ["eval", str(pred), "--gt", str(gt), "--json", str(out_json), "--plot", str(out_png)]
    )
    assert result.exit_code == 0, result.output
    assert "AP50 33.33%" in _lines(result.stdout)
    assert "1 predicted images have no ground truth" in result.stdout
    data = json.loads(out_json.read_text())
    assert data["ap50"] == pytest.approx(1 / 3)
    assert data["official"]["num_gt"] == 3 and data["official"]["num_det"] == 1
    assert set(data["coco"]) >= {"AP", "AP50", "AR100"}
    assert set(data["breakdown"]) == {"all", "small", "extreme_aspect", "other"}
    # where the AP50 is lost: 2 of the 3 faces have no detection at all
    assert data["errors"]["missed"]["count"] == 2 and data["errors"]["missed"]["fixed_ap"] == pytest.approx(1.0)
    assert any(ln.split()[:3] == ["missed", "(faces)", "2"] for ln in _lines(result.stdout))
    assert out_png.read_bytes()[:4] == b"\x89PNG"


def test_model_needs_images(app: typer.Typer, tmp_path: Path) -> None:
    gt = _write(tmp_path / "gt.csv", GT_ROWS)
    result = CliRunner().invoke(app, ["eval", "acfd-s", "--gt", str(gt)])
    assert result.exit_code == 1
    assert "--images" in result.output


def test_scoring_a_model(app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from acfd.data.formats import read_icartoon_csv
    from acfd.predict import detector as infer

    gt = _write(tmp_path / "gt.csv", GT_ROWS)
    gt_records, _ = read_icartoon_csv(gt)
    images = tmp_path / "images"
    images.mkdir()
    (images / "img1.jpg").write_bytes(b"x")  # img2.jpg missing: reported, its face counts as missed
    calls: dict = {}

    class FakeDetections:
        def __init__(self, boxes: np.ndarray) -> None:
            self.boxes = boxes.astype(np.float32)
            self.scores = np.linspace(0.9, 0.5, len(boxes)).astype(np.float32)

    class FakeDetector:
        def __init__(self, model, weights=None, device="cpu", **settings) -> None:
            calls.update(model=model, weights=weights, device=device, **settings)

        def detect_paths(self, paths, batch_size=1):
            calls["batch_size"] = batch_size
            for p in paths:
                yield Path(p), FakeDetections(gt_records[Path(p).name].boxes)

    monkeypatch.setattr(infer, "Detector", FakeDetector)
    sub = tmp_path / "sub.csv"
    result = CliRunner().invoke(
        app,
        ["eval", "acfd-s", "--gt", str(gt), "--images", str(images), "--weights", "w.safetensors",
         "--scales", "640x860,800x1075", "--batch-size", "2", "--save-csv", str(sub), "--no-coco", "--threads", "1"],
    )
    assert result.exit_code == 0, result.output
    # the weights' evaluation preset (score > 0.08, not the interactive threshold), other scales
    assert calls == {"model": "acfd-s", "weights": "w.safetensors", "device": "cpu", "preset": "evaluation",
                     "scales": ("640x860", "800x1075"), "batch_size": 2, "threads": 1, "precision": "auto"}
    assert "1 of 2 ground-truth images not found here or in subfolders (e.g. img2.jpg)" in result.output
    assert "AP50 66.67%" in _lines(result.stdout)  # 2 of 3 faces, all detections correct
    saved, _ = read_icartoon_csv(sub)
    assert list(saved) == ["img1.jpg"] and saved["img1.jpg"].scores is not None
    # the saved submission scores the same
    again = CliRunner().invoke(app, ["eval", str(sub), "--gt", str(gt), "--no-coco"])
    assert "AP50 66.67%" in _lines(again.stdout)


def test_scoring_a_model_defaults_to_the_evaluation_preset(app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from acfd.predict import detector as infer

    gt = _write(tmp_path / "gt.csv", GT_ROWS)
    images = tmp_path / "images"
    images.mkdir()
    (images / "img1.jpg").write_bytes(b"x")  # found: the run starts
    seen: dict = {}

    def fake_detector(self, model, weights=None, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(infer.Detector, "__init__", fake_detector)
    result = CliRunner().invoke(app, ["eval", "acfd-n", "--gt", str(gt), "--images", str(images), "--no-coco"])
    assert result.exit_code == 1 and "stop here" in result.output
    assert seen == {"device": "cpu", "preset": "evaluation", "threads": None, "precision": "auto"}  # all from the weights' evaluation preset
    seen.clear()
    result = CliRunner().invoke(app, ["eval", "acfd-n", "--gt", str(gt), "--images", str(images), "--no-coco",
                                      "--no-flip", "--nms-thresh", "0.55", "--scales", "paper", "--agreement-iou", "0"])
    assert result.exit_code == 1 and "stop here" in result.output
    assert (seen["flip"], seen["nms_thresh"], seen["scales"]) == (False, 0.55, ("480x645", "640x860", "800x1075"))
    assert seen["agreement_iou"] is None  # 0 turns the rescoring off
    assert "calibration" not in seen  # the weights' own calibration ("auto")
    seen.clear()
    result = CliRunner().invoke(app, ["eval", "acfd-n", "--gt", str(gt), "--images", str(images), "--no-coco", "--no-calibration"])
    assert result.exit_code == 1 and seen["calibration"] is None  # raw network scores
    seen.clear()
    result = CliRunner().invoke(app, ["eval", "acfd-n", "--gt", str(gt), "--images", str(images), "--no-coco", "--preset", "paper"])
    assert result.exit_code == 1 and seen == {"device": "cpu", "preset": "paper", "threads": None, "precision": "auto"}


# --- hardening (issue 10) ---------------------------------------------------------------------


def test_unwritable_outputs_fail_before_scoring(app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10.9: --plot / --json into an unwritable place gave tracebacks after the work."""
    from acfd.cli import eval_cmd

    gt = _write(tmp_path / "gt.csv", GT_ROWS)
    pred = _write(tmp_path / "pred.csv", PERFECT_PRED)
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(eval_cmd, "evaluate_breakdown", lambda *a: (_ for _ in ()).throw(AssertionError("scored")))
    for opt in ("--plot", "--json", "--save-csv"):
        result = CliRunner().invoke(app, ["eval", str(pred), "--gt", str(gt), opt, str(tmp_path / "file" / "x")])
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith(f"error: {opt} ") and result.stderr.count("\n") == 1
    result = CliRunner().invoke(app, ["eval", str(pred), "--gt", str(gt), "--json", str(gt)])
    assert result.exit_code == 1 and "would overwrite the input" in result.stderr


def test_warns_when_scores_mean_nothing(app: typer.Typer, tmp_path: Path) -> None:
    """Issue 10.14: predictions without scores, or the ground truth itself, scored silently."""
    gt = _write(tmp_path / "gt.csv", GT_ROWS)
    result = CliRunner().invoke(app, ["eval", str(gt), "--gt", str(gt)])
    assert result.exit_code == 0, result.output
    assert "no score column" in result.stderr and "the ground truth itself" in result.stderr
    pred = _write(tmp_path / "pred.csv", PERFECT_PRED)
    result = CliRunner().invoke(app, ["eval", str(pred), "--gt", str(gt)])
    assert "warning" not in result.stderr


def test_detect_json_is_accepted_as_predictions(app: typer.Typer, tmp_path: Path) -> None:
    """Issue 10.14: `acfd eval faces.json` was taken for a model."""
    gt = _write(tmp_path / "gt.csv", GT_ROWS)
    faces = [
        {"file": "sub/img1.jpg", "width": 400, "height": 300, "detections": [
            {"box": [10, 10, 109, 109], "score": 0.9}, {"box": [200, 10, 299, 109], "score": 0.8}]},
        {"file": "img2.jpg", "width": 100, "height": 200, "detections": [{"box": [10, 10, 59, 119], "score": 0.7}]},
    ]
    (tmp_path / "faces.json").write_text(json.dumps(faces))
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "faces.json"), "--gt", str(gt)])
    assert result.exit_code == 0, result.output
    assert "AP50 100.00%" in _lines(result.stdout)
    (tmp_path / "coco.json").write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]))
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "coco.json"), "--gt", str(gt)])
    assert result.exit_code == 1 and "no file names" in result.stderr


def test_bad_device_is_one_line(app: typer.Typer, tmp_path: Path) -> None:
    gt = _write(tmp_path / "gt.csv", GT_ROWS)
    (tmp_path / "imgs").mkdir()
    result = CliRunner().invoke(app, ["eval", "acfd-tiny", "--gt", str(gt), "--images", str(tmp_path / "imgs"), "--device", "foo"])
    assert result.exit_code == 1 and result.stderr.strip() == "error: --device 'foo': unknown device (use cpu, cuda, cuda:N or mps)"


def test_gt_box_outside_its_image_follows_data_check(app: typer.Typer, tmp_path: Path) -> None:
    """Issue 10.16: data check removed a GT box entirely outside its image, eval counted it."""
    from PIL import Image

    gt = _write(tmp_path / "gt.csv", [*GT_ROWS, "img2.jpg,500,500,600,600,face"])  # img2 is 100x200
    pred = _write(tmp_path / "pred.csv", PERFECT_PRED)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.new("RGB", (400, 300)).save(imgs / "img1.jpg")
    Image.new("RGB", (100, 200)).save(imgs / "img2.jpg")
    result = CliRunner().invoke(app, ["eval", str(pred), "--gt", str(gt), "--images", str(imgs)])
    assert result.exit_code == 0, result.output
    assert "AP50 100.00%" in _lines(result.stdout) and "entirely outside" in result.stderr


# --- hostile prediction files (issue 38 A4) ----------------------------------------------------


def test_a_prediction_file_with_no_usable_row_is_an_error_in_one_line(app: typer.Typer, tmp_path: Path) -> None:
    """A4: every row malformed (or an empty file) printed one line per row, then AP50 0.00, exit 0."""
    gt = _write(tmp_path / "gt.csv", GT_ROWS)
    bad = _write(tmp_path / "bad.csv", [f"img1.jpg;{i};10;109;109;face;0.9" for i in range(500)] + ["img2.jpg,1,2"])
    result = CliRunner().invoke(app, ["eval", str(bad), "--gt", str(gt), "--no-coco"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: no usable prediction: all 501 rows are malformed")
    assert f"(first: {bad}:1: error: expected 5, 6 or 7" in lines[0]
    empty = _write(tmp_path / "empty.csv", [])
    result = CliRunner().invoke(app, ["eval", str(empty), "--gt", str(gt), "--no-coco"])
    assert result.exit_code == 1 and f"error: {empty}: no predictions in the file (it is empty)" in result.stderr


def test_impossible_scores_and_boxes_are_reported_and_many_problems_summed_up(app: typer.Typer, tmp_path: Path) -> None:
    """A4: scores of 5.0 / -1 and boxes at 1e30 went by without a word."""
    gt = _write(tmp_path / "gt.csv", GT_ROWS)
    rows = [*PERFECT_PRED, "img1.jpg,10,10,109,109,face,5.0", "img2.jpg,10,10,59,119,face,-1",
            "img2.jpg,1e30,10,2e30,119,face,0.5", *[f"img2.jpg,{i},x,3,4,face,0.5" for i in range(20)]]
    result = CliRunner().invoke(app, ["eval", str(_write(tmp_path / "p.csv", rows)), "--gt", str(gt), "--no-coco"])
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert "p.csv:4: warning: score 5.0 outside [0, 1]" in err and "p.csv:5: warning: score -1 outside [0, 1]" in err
    assert "p.csv:6: error: coordinates (1e30,10,2e30,119) beyond 1,000,000 pixels" in err
    problem_lines = [ln for ln in err.splitlines() if "p.csv" in ln]
    assert len(problem_lines) == 11 and problem_lines[-1].endswith("... and 13 more problems (13 errors, 0 warnings)")


def test_images_in_subfolders_are_found_as_detect_finds_them(app: typer.Typer, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 38 A14: with the frames in DIR/<show>/, eval printed one "not found" line per image,
    scored and exited 0."""
    from PIL import Image

    from acfd.predict import detector as infer

    gt = _write(tmp_path / "gt.csv", GT_ROWS)
    images = tmp_path / "frames"
    (images / "show").mkdir(parents=True)
    for name in ("img1.jpg", "img2.jpg"):
        Image.new("RGB", (320, 200)).save(images / "show" / name)
    seen: list[Path] = []

    class FakeDetector:
        def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
            pass

        def detect_paths(self, paths, batch_size=1):  # noqa: ANN001, ANN202
            for p in paths:
                seen.append(Path(p))
                yield Path(p), type("D", (), {"boxes": np.zeros((0, 4)), "scores": np.zeros(0)})()

    monkeypatch.setattr(infer, "Detector", FakeDetector)
    result = CliRunner().invoke(app, ["eval", "acfd-n", "--gt", str(gt), "--images", str(images), "--no-coco"])
    assert result.exit_code == 0, result.output
    assert sorted(seen) == [images / "show" / "img1.jpg", images / "show" / "img2.jpg"]
    assert "not found" not in result.output
    # a folder without any of them: one line with the count, before any work
    (tmp_path / "other").mkdir()
    result = CliRunner().invoke(app, ["eval", "acfd-n", "--gt", str(gt), "--images", str(tmp_path / "other")])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'other'}: none of the 2 ground-truth images is in this folder or its subfolders "
        "(e.g. img1.jpg); check --images (or --split)"]


def test_most_ground_truth_images_without_predictions_suggests_a_split(app: typer.Typer, tmp_path: Path) -> None:
    """Issue 38 A15: predictions for the dev split scored against all of train.csv gave a low AP50 silently."""
    gt = _write(tmp_path / "gt.csv", [*GT_ROWS, "img3.jpg,1,1,50,50", "img4.jpg,1,1,50,50"])
    pred = _write(tmp_path / "pred.csv", PERFECT_PRED[2:])  # img2 only: 3 of 4 images without
    result = CliRunner().invoke(app, ["eval", str(pred), "--gt", str(gt), "--no-coco"])
    assert result.exit_code == 0, result.output
    assert "warning: 3 of 4 ground-truth images have no prediction" in result.stderr and "--split FILE" in result.stderr
    split = _write(tmp_path / "split.txt", ["img2.jpg"])
    result = CliRunner().invoke(app, ["eval", str(pred), "--gt", str(gt), "--split", str(split), "--no-coco"])
    assert result.exit_code == 0 and "no prediction" not in result.stderr and "AP50 100.00%" in _lines(result.stdout)
