"""``acfd detect`` through CliRunner on a private Typer app, with acfd-tiny random weights."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from acfd.cli.detect_cmd import register
from acfd.predict.sources import collect_inputs

FAST = ["--scales", "128", "--score-thresh", "0", "--no-progress"]


@pytest.fixture()
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # keeps "detect" a subcommand
        pass

    register(app)
    return app


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from acfd.models import create_model
    from acfd.predict.modelfile import save_weights

    torch.manual_seed(0)
    return save_weights(create_model("acfd-tiny"), tmp_path_factory.mktemp("w") / "tiny.safetensors")


def invoke(app: typer.Typer, args: list[str]):  # noqa: ANN201 - click Result
    return CliRunner().invoke(app, ["detect", *[str(a) for a in args]])


def rand_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_folder(root: Path) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """Good images of many kinds (key -> (width, height)) and bad files (names)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir()
    good: dict[str, tuple[int, int]] = {}
    Image.fromarray(rand_rgb(60, 80)).save(root / "rgb.png")
    good["rgb.png"] = (80, 60)
    Image.fromarray(rand_rgb(50, 70, 1)).save(root / "sub" / "nested.jpg")
    good["sub/nested.jpg"] = (70, 50)
    Image.fromarray(rand_rgb(40, 60, 2)[:, :, 0]).save(root / "gray.png")
    good["gray.png"] = (60, 40)
    Image.fromarray(np.dstack([rand_rgb(40, 50, 3), np.full((40, 50), 128, np.uint8)]), "RGBA").save(root / "rgba.png")
    good["rgba.png"] = (50, 40)
    Image.fromarray(rand_rgb(30, 40, 4)).convert("P").save(root / "palette.png")
    good["palette.png"] = (40, 30)
    Image.fromarray((np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) * 50)).save(root / "deep16.png")
    assert Image.open(root / "deep16.png").mode.startswith("I")
    good["deep16.png"] = (40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated: 40 wide x 70 high
    Image.fromarray(rand_rgb(40, 70, 5)).save(root / "rotated.jpg", exif=exif)
    good["rotated.jpg"] = (40, 70)
    Image.new("RGB", (3000, 2000), (200, 180, 160)).save(root / "large.png")
    good["large.png"] = (3000, 2000)
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    (root / "empty.png").write_bytes(b"")
    data = (root / "rgb.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "text.jpg").write_text("this is text, not a JPEG")
    (root / "notes.txt").write_text("skipped: not an image suffix")
    return good, ["corrupt.jpg", "empty.png", "truncated.png", "text.jpg"]


def read_csv_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_folder_with_good_and_bad_files(app: typer.Typer, weights: Path, tmp_path: Path) -> None:
    good, bad = make_folder(tmp_path / "imgs")
    (tmp_path / "other.xyz").write_text("?")
    out = tmp_path / "out" / "sub.csv"
    res = invoke(app, [tmp_path / "imgs", tmp_path / "other.xyz", tmp_path / "missing.png",
                       "-o", out, "--weights", weights, *FAST])
    assert res.exit_code == 1, res.output
    n_fail = len(bad) + 2
    assert f"{len(good)} images, " in res.stdout and f", {n_fail} failed" in res.stdout
    err_lines = res.stderr.strip().splitlines()
    for name in bad:
        assert any(line.startswith(str(tmp_path / "imgs" / name) + ": ") for line in err_lines), name
    assert any(line.startswith(f"{tmp_path / 'other.xyz'}: unsupported file type") for line in err_lines)
    assert f"{tmp_path / 'missing.png'}: no such file or directory" in err_lines
    assert "notes.txt" not in res.output  # files in folders without an image suffix are skipped

    from acfd.data.formats import read_icartoon_csv

    records, problems = read_icartoon_csv(out)
    assert not [p for p in problems if p.severity == "error"]
    good = {Path(k).name: v for k, v in good.items()}  # the submission CSV has bare file names
    assert set(records) == set(good)  # every good image, no bad one
    rows = read_csv_rows(out)
    assert all(len(r) == 7 and r[5] == "face" for r in rows)
    for key in good:  # per image: contiguous rows in descending score order
        scores = [float(r[6]) for r in rows if r[0] == key]
        assert scores == sorted(scores, reverse=True) and scores
    assert sum(len(r) for r in records.values()) == int(res.stdout.split(" images, ")[1].split(" faces")[0])


def test_json_output_sizes_and_boxes(app: typer.Typer, weights: Path, tmp_path: Path) -> None:
    good, _ = make_folder(tmp_path / "imgs")
    out = tmp_path / "det.json"
    res = invoke(app, [tmp_path / "imgs", "-o", out, "--weights", weights, *FAST])
    assert res.exit_code == 1
    data = json.loads(out.read_text())
    assert [d["file"] for d in data] == sorted(good)  # folder order
    for d in data:
        assert (d["width"], d["height"]) == good[d["file"]]  # EXIF rotation applied
        assert d["frame"] is None and d["timestamp"] is None
        assert 0 < len(d["detections"]) <= 100
        scores = [x["score"] for x in d["detections"]]
        assert scores == sorted(scores, reverse=True)
        for x in d["detections"]:
            x1, y1, x2, y2 = x["box"]
            assert 0 <= x1 <= x2 <= d["width"] and 0 <= y1 <= y2 <= d["height"]


def test_all_good_exits_0_and_prints_a_summary_per_image(app: typer.Typer, weights: Path, tmp_path: Path) -> None:
    Image.fromarray(rand_rgb(60, 80)).save(tmp_path / "a.png")
    Image.fromarray(rand_rgb(60, 80, 1)).save(tmp_path / "b.jpg")
    res = invoke(app, [tmp_path / "a.png", tmp_path / "b.jpg", "--model", "acfd-tiny", "--weights", weights,
                       "--batch-size", "2", *FAST])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("a.png: ") and " faces" in lines[0]
    assert lines[-1].endswith(", 0 failed") and lines[-1].startswith("2 images, ")
    # issue 10.13: the boxes are printed, one line per face under its image
    heads = [i for i, ln in enumerate(lines) if ln.startswith(("a.png: ", "b.jpg: "))]
    assert len(heads) == 2
    n_a = int(lines[0].split(": ")[1].split()[0])
    assert n_a > 0 and heads[1] == 1 + n_a
    box = [float(v) for v in lines[1].split()]
    assert len(box) == 5 and 0 <= box[0] < box[2] <= 80 and 0 <= box[1] < box[3] <= 60 and 0 <= box[4] <= 1


def test_nothing_readable_exits_2_and_keeps_the_old_output(app: typer.Typer, weights: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"nope")
    out = tmp_path / "out.csv"
    out.write_text("old.jpg,1,2,3,4,face,0.5\n")
    res = invoke(app, [tmp_path / "bad.png", tmp_path / "missing.jpg", "-o", out, "--weights", weights, *FAST])
    assert res.exit_code == 2
    assert "0 images, 0 faces, 2 failed" in res.stdout
    assert f"{tmp_path / 'bad.png'}: " in res.stderr
    assert out.read_text() == "old.jpg,1,2,3,4,face,0.5\n"
    assert not list(tmp_path.glob(".out.csv*"))  # no temp files left behind
    res = invoke(app, [tmp_path / "nothing_here", "--weights", weights, *FAST])
    assert res.exit_code == 2 and "no such file or directory" in res.stderr


def test_video_input_json_and_csv(app: typer.Typer, weights: Path, tmp_path: Path) -> None:
    from test_video import write_video

    video = write_video(tmp_path / "clip.avi", n_frames=5, size=(96, 64))
    out = tmp_path / "v.json"
    res = invoke(app, [video, "-o", out, "--video-every", "2", "--weights", weights, *FAST])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert [d["frame"] for d in data] == [0, 2, 4]
    assert [d["timestamp"] for d in data] == pytest.approx([0.0, 0.2, 0.4])
    assert [d["file"] for d in data] == [f"clip.avi#frame={i:06d}" for i in (0, 2, 4)]
    assert all((d["width"], d["height"]) == (96, 64) for d in data)
    assert "3 images, " in res.stdout
    out_csv = tmp_path / "v.csv"
    res = invoke(app, [video, "-o", out_csv, "--video-every", "2", "--batch-size", "2", "--weights", weights, *FAST])
    assert res.exit_code == 0, res.output
    names = {r[0] for r in read_csv_rows(out_csv)}
    assert names == {"clip.avi#frame=000000", "clip.avi#frame=000002", "clip.avi#frame=000004"}


def test_unreadable_video_is_a_failure_and_the_rest_goes_on(app: typer.Typer, weights: Path, tmp_path: Path) -> None:
    (tmp_path / "broken.mp4").write_bytes(b"not a video" * 50)
    Image.fromarray(rand_rgb(60, 80)).save(tmp_path / "a.png")
    res = invoke(app, [tmp_path / "broken.mp4", tmp_path / "a.png", "--weights", weights, *FAST])
    assert res.exit_code == 1
    assert f"{tmp_path / 'broken.mp4'}: " in res.stderr
    assert "1 images, " in res.stdout and ", 1 failed" in res.stdout


def test_save_images(app: typer.Typer, weights: Path, tmp_path: Path) -> None:
    from test_video import write_video

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(rand_rgb(60, 80)).save(src / "a.png")
    Image.fromarray(rand_rgb(60, 80, 1)).save(src / "a.jpg")  # same stem: both kept
    Image.fromarray(rand_rgb(50, 70, 2)).save(src / "sub" / "b.png")
    write_video(src / "clip.avi", n_frames=3, size=(96, 64))
    out_dir = tmp_path / "drawn"
    res = invoke(app, [src, "--save-images", out_dir, "--video-every", "2", "--weights", weights, *FAST])
    assert res.exit_code == 0, res.output
    files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    assert files == ["a.jpg", "a.png.jpg", "clip_frame000000.jpg", "clip_frame000002.jpg", "sub/b.jpg"]
    drawn = cv2.imread(str(out_dir / "sub" / "b.jpg"))
    assert drawn is not None and drawn.shape == (50, 70, 3)
    original = np.asarray(Image.open(src / "sub" / "b.png"))[:, :, ::-1]
    assert np.abs(drawn.astype(int) - original).mean() > 1  # boxes were drawn


def test_coco_results(app: typer.Typer, weights: Path, tmp_path: Path) -> None:
    Image.fromarray(rand_rgb(60, 80)).save(tmp_path / "a.png")
    Image.fromarray(rand_rgb(60, 80, 1)).save(tmp_path / "b.png")
    out = tmp_path / "res.json"
    res = invoke(app, [tmp_path / "a.png", tmp_path / "b.png", "-o", out, "--format", "coco", "--weights", weights, *FAST])
    assert res.exit_code == 0, res.output
    results = json.loads(out.read_text())
    assert {r["image_id"] for r in results} == {1, 2}
    assert all(r["category_id"] == 1 and len(r["bbox"]) == 4 and r["bbox"][2] >= 0 for r in results)
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": [{"id": 7, "file_name": "imgs/a.png", "width": 80, "height": 60}],
                              "annotations": [], "categories": [{"id": 1, "name": "face"}]}))
    res = invoke(app, [tmp_path / "a.png", tmp_path / "b.png", "-o", out, "--format", "coco",
                       "--coco-gt", gt, "--weights", weights, *FAST])
    assert res.exit_code == 1
    assert {r["image_id"] for r in json.loads(out.read_text())} == {7}  # matched by file name
    assert "b.png: not an image of the ground truth" in res.stderr


def test_bad_options_are_usage_errors(app: typer.Typer, weights: Path, tmp_path: Path) -> None:
    Image.fromarray(rand_rgb(60, 80)).save(tmp_path / "a.png")
    res = invoke(app, [tmp_path / "a.png", "--scales", "640-860", "--weights", weights])
    assert res.exit_code == 2 and "invalid scale" in res.output
    res = invoke(app, [tmp_path / "a.png", "-o", tmp_path / "x.txt", "--weights", weights])
    assert res.exit_code == 2 and "--format" in res.output
    res = invoke(app, [tmp_path / "a.png", "--weights", tmp_path / "missing.safetensors", *FAST])
    assert res.exit_code == 2 and "cannot load the model" in res.stderr


def test_eval_flag_uses_the_evaluation_preset(app: typer.Typer, weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from acfd.predict import detector as infer
    from acfd.predict.modelfile import write_presets
    from acfd.predict.presets import shipped_presets

    tuned = write_presets(weights, shipped_presets(), tmp_path / "tuned.safetensors")  # the shipped model's presets

    seen: dict[str, object] = {}
    original = infer.Detector.__init__

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        original(self, *args, **kwargs)
        seen["scales"], seen["flip"], seen["nms"] = self.scales, self.flip, self.nms_thresh
        seen["score"] = (self.score_thresh, self.raw_score_floor)
        seen["agree"] = self.agreement_iou
        self.scales = infer.parse_scales("128")  # keep the test fast

    monkeypatch.setattr(infer.Detector, "__init__", spy)
    Image.fromarray(rand_rgb(30, 40)).save(tmp_path / "a.png")
    res = invoke(app, [tmp_path / "a.png", "--eval", "--weights", tuned, "--no-progress"])
    assert res.exit_code == 0, res.output
    # the weights' evaluation preset; score: the paper's 0.08 on the network's scores, every
    # (calibrated) score above it kept
    assert seen == {"scales": infer.parse_scales(["480", "640", "960:max128:noflip"]), "score": (0.0, 0.08), "flip": True, "nms": 0.45, "agree": 0.75}
    paper = {"scales": infer.parse_scales("paper"), "score": (0.0, 0.08), "flip": False, "nms": 0.55, "agree": None}
    res = invoke(app, [tmp_path / "a.png", "--eval", "--scales", "paper", "--no-flip", "--nms-thresh", "0.55",
                       "--agreement-iou", "0", "--weights", tuned, "--no-progress"])
    assert res.exit_code == 0, res.output
    assert seen == paper  # the paper's protocol, by hand ...
    res = invoke(app, [tmp_path / "a.png", "--preset", "paper", "--weights", tuned, "--no-progress"])
    assert res.exit_code == 0, res.output
    assert seen == paper  # ... and as a preset
    res = invoke(app, [tmp_path / "a.png", "--flip", "--agreement-iou", "0.6", "--weights", tuned, "--no-progress"])
    assert res.exit_code == 0, res.output
    # interactive + flip + rescoring
    assert seen == {"scales": infer.parse_scales("640"), "score": (0.35, None), "flip": True, "nms": 0.45, "agree": 0.6}
    res = invoke(app, [tmp_path / "a.png", "--weights", tuned, "--no-progress"])
    assert res.exit_code == 0, res.output
    assert seen["agree"] is None  # interactive: plain NMS
    # weights without presets: the generic ones
    res = invoke(app, [tmp_path / "a.png", "--weights", weights, "--no-progress"])
    assert res.exit_code == 0, res.output
    assert seen == {"scales": infer.parse_scales("640"), "score": (0.5, None), "flip": False, "nms": 0.5, "agree": None}
    res = invoke(app, [tmp_path / "a.png", "--eval", "--preset", "paper", "--weights", weights])
    assert res.exit_code == 2 and "--eval is --preset evaluation" in res.output


def test_old_option_spellings_work_and_warn_once(app: typer.Typer, weights: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    from acfd.cli import options

    options._warned.clear()
    Image.fromarray(rand_rgb(30, 40)).save(tmp_path / "a.png")
    args = [tmp_path / "a.png", "--weights", weights, "--scales", "128", "--no-progress"]
    with caplog.at_level("WARNING"):
        thr = invoke(app, [*args, "--score-thr", "0.99", "-o", tmp_path / "thr.json"])
        thr_again = invoke(app, [*args, "--score-thr", "0.99", "-o", tmp_path / "thr2.json"])
    thresh = invoke(app, [*args, "--score-thresh", "0.99", "-o", tmp_path / "thresh.json"])
    assert thr.exit_code == thr_again.exit_code == thresh.exit_code == 0
    assert (tmp_path / "thr.json").read_text() == (tmp_path / "thresh.json").read_text()
    warned = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert warned == ["--score-thr is deprecated and will be removed; use --score-thresh"]  # once
    clash = invoke(app, [*args, "--score-thr", "0.5", "--score-thresh", "0.6"])
    assert clash.exit_code == 2 and "give --score-thresh only" in clash.stderr


def test_collect_inputs_globs_and_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    for rel in ("d/x.png", "d/e/y.jpg", "d/e/z.txt", "d/.hidden.png", "top.png"):
        (tmp_path / rel).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    items, failures = collect_inputs(["d/**/*.jpg", "d", "top.png", "top.png", "nomatch*.png"])
    assert [(i.key, i.kind) for i in items] == [("e/y.jpg", "image"), ("x.png", "image"), ("top.png", "image")]
    assert failures == [("nomatch*.png", "no files match this pattern")]


def test_registered_in_the_root_app() -> None:
    from acfd.cli import app as root

    res = CliRunner().invoke(root, ["detect", "--help"], env={"COLUMNS": "200"})  # no wrapping in the check
    assert res.exit_code == 0 and "--save-images" in res.output and "--video-every" in res.output
    # the help shows the shipped model's presets
    assert "0.35 (interactive), 0 (evaluation)" in res.output
    assert "640 (interactive), 480,640,960:max128:noflip (evaluation)" in res.output
    assert "--score-thr " not in res.output  # the deprecated spelling is hidden


# --------------------------------------------------------------------------------------------
# hardening (issue 10)


def test_drawing_does_not_change_the_written_boxes(app: typer.Typer, weights: Path, tmp_path: Path) -> None:
    """Issue 10.1: -o wrote y2 = 471 with --save-images and 472 without on a 472-px image."""
    Image.fromarray(rand_rgb(472, 300)).save(tmp_path / "a.png")
    args = [tmp_path / "a.png", "--weights", weights, *FAST]
    assert invoke(app, [*args, "-o", tmp_path / "plain.json"]).exit_code == 0
    assert invoke(app, [*args, "-o", tmp_path / "drawn.json", "--save-images", tmp_path / "drawn"]).exit_code == 0
    plain, drawn = (json.loads((tmp_path / n).read_text()) for n in ("plain.json", "drawn.json"))
    assert plain[0]["detections"] and plain[0]["detections"] == drawn[0]["detections"]
    assert any(d["box"][3] == 472 for d in plain[0]["detections"])  # a box that reaches the bottom edge


def test_save_images_refuses_to_overwrite_the_inputs(app: typer.Typer, weights: Path, tmp_path: Path) -> None:
    """Issue 10.2: --save-images DIR on DIR overwrote the input images."""
    Image.fromarray(rand_rgb(60, 80)).save(tmp_path / "a.jpg")
    before = (tmp_path / "a.jpg").read_bytes()
    res = invoke(app, [tmp_path, "--save-images", tmp_path, "--weights", weights, *FAST])
    assert res.exit_code == 1 and "would overwrite the input" in res.stderr
    assert (tmp_path / "a.jpg").read_bytes() == before
    res = invoke(app, [tmp_path / "a.jpg", "-o", tmp_path / "a.jpg", "-f", "json", "--weights", weights, *FAST])
    assert res.exit_code == 1 and "would overwrite the input" in res.stderr
    assert (tmp_path / "a.jpg").read_bytes() == before


def _stop_at_the_second_call(how: str) -> None:
    """Stop ``acfd detect`` as a user (Ctrl-C) or a job scheduler (SIGTERM) would."""
    import os
    import signal

    if how == "ctrl-c":
        raise KeyboardInterrupt
    os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("how,code,said", [("ctrl-c", 130, "interrupted after 1 of 3 files"),
                                           ("sigterm", 143, "terminated (SIGTERM) after 1 of 3 files")])
def test_a_stopped_run_writes_a_partial_file_under_another_name(
    app: typer.Typer, weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, code: int, said: str
) -> None:
    """Issue 10.3: the partial results went to the real output name; issue 38 A11: on SIGTERM
    acfd detect -o exited 143 and lost every result."""
    import signal

    from acfd.predict import detector as infer

    for i in range(3):
        Image.fromarray(rand_rgb(60, 80, i)).save(tmp_path / f"{i}.png")
    original = infer.Detector.detect_arrays
    calls = {"n": 0}

    def stopped_at_the_second(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] == 2:
            _stop_at_the_second_call(how)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(infer.Detector, "detect_arrays", stopped_at_the_second)
    out = tmp_path / "out" / "submission.csv"
    before = signal.getsignal(signal.SIGTERM)
    # one thread: one image at a time, so the stop lands after a known number of files
    res = invoke(app, [tmp_path, "-o", out, "--weights", weights, "--threads", "1", *FAST])
    assert res.exit_code == code
    assert not out.exists() and (tmp_path / "out" / "submission.partial.csv").is_file()
    assert said in res.stderr and "submission.partial.csv" in res.stderr
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is the process's again


def test_two_threads_detect_two_images_at_once_with_the_same_results(app: typer.Typer, weights: Path, tmp_path: Path) -> None:
    """With 2 threads a folder, a list or a video runs one image per thread (acfd.predict.parallel):
    the same boxes in the same order as one thread, bad files reported and the others done."""
    from acfd.predict.detector import Detector

    good, bad = make_folder(tmp_path / "imgs")
    outputs = {}
    for threads in ("1", "2"):
        out = tmp_path / f"det{threads}.json"
        res = invoke(app, [tmp_path / "imgs", "-o", out, "--weights", weights, "--threads", threads, *FAST])
        assert res.exit_code == 1 and f"{len(good)} images, " in res.stdout and f", {len(bad)} failed" in res.stdout
        outputs[threads] = json.loads(out.read_text())
    assert outputs["1"] == outputs["2"] and [d["file"] for d in outputs["2"]] == sorted(good)
    det = Detector("acfd-tiny", weights, threads=2, scales="128", score_thresh=0.0)
    assert det.parallel_images == 2 and det.image_workers() is det.image_workers()
    paths = [tmp_path / "imgs" / name for name in sorted(good)]
    assert [d.boxes.tolist() for d in det(paths)] == [Detector("acfd-tiny", weights, threads=1, scales="128",
                                                                score_thresh=0.0)(p).boxes.tolist() for p in paths]
    assert Detector("acfd-tiny", weights, threads=1).image_workers() is None

    from test_video import write_video

    video = write_video(tmp_path / "clip.avi", n_frames=7, size=(96, 64))
    frames = {}
    for threads in ("1", "2"):
        out = tmp_path / f"v{threads}.json"
        assert invoke(app, [video, "-o", out, "--weights", weights, "--threads", threads, *FAST]).exit_code == 0
        frames[threads] = json.loads(out.read_text())
    assert frames["1"] == frames["2"] and [d["frame"] for d in frames["2"]] == list(range(7))


def test_ctrl_c_while_loading_says_so(app: typer.Typer, weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from acfd.predict import detector as infer

    def interrupted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise KeyboardInterrupt

    monkeypatch.setattr(infer.Detector, "__init__", interrupted)
    Image.fromarray(rand_rgb(60, 80)).save(tmp_path / "a.png")
    res = invoke(app, [tmp_path / "a.png", "--weights", weights, *FAST])
    assert res.exit_code == 130 and "nothing was written" in res.stderr


def test_outputs_and_ground_truth_checked_before_the_work(
    app: typer.Typer, weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10.4: an unwritable -o or a missing --coco-gt failed only after all inference."""
    from acfd.predict import detector as infer

    def no_model(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(infer.Detector, "__init__", no_model)
    Image.fromarray(rand_rgb(60, 80)).save(tmp_path / "a.png")
    (tmp_path / "file").write_text("x")
    res = invoke(app, [tmp_path / "a.png", "-o", tmp_path / "file" / "out.csv", "--weights", weights, *FAST])
    assert res.exit_code == 1 and res.stderr.startswith("error: -o ") and "is a file" in res.stderr
    res = invoke(app, [tmp_path / "a.png", "-o", tmp_path / "r.json", "-f", "coco", "--coco-gt",
                       tmp_path / "gt.json", "--weights", weights, *FAST])
    assert res.exit_code == 1 and f"--coco-gt {tmp_path / 'gt.json'}: ground-truth file not found" in res.stderr
    assert not (tmp_path / "r.json").exists()
    res = invoke(app, [tmp_path / "a.png", "--save-images", tmp_path / "file", "--weights", weights, *FAST])
    assert res.exit_code == 1 and "is a file, not a folder" in res.stderr


def test_device_scales_and_onnx_model_errors(app: typer.Typer, weights: Path, tmp_path: Path) -> None:
    """Issues 10.5, 10.10, 10.11: one line each."""
    Image.fromarray(rand_rgb(60, 80)).save(tmp_path / "a.png")
    res = invoke(app, [tmp_path / "a.png", "--weights", weights, "--scales", "20000", "--no-progress"])
    assert res.exit_code == 2 and "larger than the limit" in res.output
    res = invoke(app, [tmp_path / "a.png", "--weights", weights, "--device", "foo", *FAST])
    assert res.exit_code == 1 and res.stderr.strip().splitlines() == ["error: --device 'foo': unknown device (use cpu, cuda, cuda:N or mps)"]
    res = invoke(app, [tmp_path / "a.png", "--model", tmp_path / "missing.onnx", *FAST])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1 and "missing.onnx" in res.stderr


def test_onnx_file_as_model(app: typer.Typer, weights: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from acfd.deploy.export import export_onnx
    from acfd.predict.modelfile import load_model

    onnx = export_onnx(load_model(weights), tmp_path / "m.onnx", sample_size=(128, 128))
    Image.fromarray(rand_rgb(60, 80)).save(tmp_path / "a.png")
    a = invoke(app, [tmp_path / "a.png", "--model", onnx, "-o", tmp_path / "a.json", *FAST])
    b = invoke(app, [tmp_path / "a.png", "--weights", weights, "-o", tmp_path / "b.json", *FAST])
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    da, db = (json.loads((tmp_path / n).read_text())[0]["detections"] for n in ("a.json", "b.json"))
    assert len(da) == len(db) > 0


def test_empty_folder_says_why(app: typer.Typer, weights: Path, tmp_path: Path) -> None:
    """Issue 10.17: an empty folder gave '0 images ... exit 2' without a reason."""
    (tmp_path / "empty").mkdir()
    res = invoke(app, [tmp_path / "empty", "--weights", weights, *FAST])
    assert res.exit_code == 2 and f"{tmp_path / 'empty'}: no images or videos in this folder" in res.stderr


def test_csv_uses_bare_file_names_and_warns_on_clashes(app: typer.Typer, weights: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 10.15: sub/x.jpg names matched no ground truth."""
    for rel in ("sub/x.png", "a/y.png", "b/y.png"):
        (tmp_path / "in" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rand_rgb(60, 80)).save(tmp_path / "in" / rel)
    out = tmp_path / "s.csv"
    with caplog.at_level("WARNING"):
        res = invoke(app, [tmp_path / "in", "-o", out, "--weights", weights, *FAST])
    assert res.exit_code == 0, res.output
    names = {r[0] for r in read_csv_rows(out)}
    assert "x.png" in names and "sub/x.png" not in names
    assert {"a/y.png", "b/y.png"} <= names
    assert any("several folders" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------------------------
# model names and weights (issue 38 A2, A10)


def test_a_variant_without_weights_is_refused_not_run_with_random_weights(app: typer.Typer, tmp_path: Path) -> None:
    """A2: --model acfd-s (no weights shipped) printed one warning and boxed the whole image at 1.00."""
    Image.fromarray(rand_rgb(60, 80)).save(tmp_path / "a.png")
    res = invoke(app, [tmp_path / "a.png", "--model", "acfd-s", "--no-progress"])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [
        "error: --model acfd-s: no weights are shipped for this variant; give its trained weights with --weights FILE"]
    from acfd.cli import app as root

    gt = tmp_path / "gt.csv"
    gt.write_text("a.png,10,10,40,40\n")
    res = CliRunner().invoke(root, ["eval", "--model", "acfd-s", "--gt", str(gt), "--images", str(tmp_path)])
    assert res.exit_code == 2 and "--model acfd-s: no weights are shipped" in res.stderr


def test_model_and_weights_errors_say_what_is_wrong(app: typer.Typer, tmp_path: Path) -> None:
    """A10: a missing --weights said "not a model name"; an unknown --model warned about random weights first."""
    Image.fromarray(rand_rgb(60, 80)).save(tmp_path / "a.png")
    res = invoke(app, [tmp_path / "a.png", "--weights", tmp_path / "nope.safetensors", *FAST])
    assert res.exit_code == 2 and f"{tmp_path / 'nope.safetensors'}: weights file not found" in res.stderr
    assert "not a model name" not in res.stderr
    res = invoke(app, [tmp_path / "a.png", "--model", "acfd-zzz", *FAST])
    assert res.exit_code == 2 and "unknown model 'acfd-zzz'" in res.stderr
    assert "RANDOM" not in res.output


