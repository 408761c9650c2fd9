"""acfd.data.check and acfd.data.stats on tiny hand-made datasets (and the bundled samples)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from acfd.data.check import check_dataset, run_check, summarize_problems
from acfd.data.formats import ImageRecord, read_icartoon_csv
from acfd.data.image_io import load_image
from acfd.data.stats import dataset_stats, plot_stats


@pytest.fixture()
def dataset(tmp_path: Path) -> tuple[Path, Path, Path]:
    """images/ with a.jpg (40x30), b.jpg (40x30), c.jpg (unannotated), broken.jpg; a CSV; a split."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.new("RGB", (40, 30), (200, 100, 50)).save(images / name)
    noise = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).save(images / "full.jpg", quality=95)
    data = (images / "full.jpg").read_bytes()
    (images / "full.jpg").unlink()
    (images / "broken.jpg").write_bytes(data[: len(data) // 2])  # header intact, pixels cut
    csv = tmp_path / "ann.csv"
    csv.write_text(
        "a.jpg,1,1,10,10\n"  # 1 fine
        "a.jpg,30,20,50,40\n"  # 2 sticks out of 40x30 -> clipped
        "b.jpg,5,5,2,9\n"  # 3 empty box -> error
        "b.jpg,1,1,5,5\n"  # 4 fine
        "missing.jpg,1,1,5,5\n"  # 5 image not found
        "broken.jpg,1,1,5,5\n"  # 6 truncated (found only with decode=True)
        "b.jpg,100,100,120,120\n"  # 7 entirely outside -> removed
    )
    split = tmp_path / "split.txt"
    split.write_text("a.jpg\nc.jpg\nnothere.jpg\n\na.jpg\n")
    return csv, images, split


def test_check_dataset_finds_everything(dataset: tuple[Path, Path, Path]) -> None:
    csv, images, split = dataset
    problems = check_dataset(csv, images, split=split)
    lines = [str(p) for p in problems]
    assert f"{csv}:3: error: empty box (5,5,2,9): needs x2 > x1 and y2 > y1; row dropped" in lines
    assert f"{images / 'missing.jpg'}: error: file not found" in lines
    assert f"{images / 'a.jpg'}: warning: 1 box(es) extend outside the 40x30 image; clipped" in lines
    assert f"{images / 'b.jpg'}: error: 1 box(es) entirely outside the 40x30 image; removed" in lines
    assert f"{split}:2: info: c.jpg: no annotation entry (no faces?)" in lines
    assert any(p.file == str(split) and p.line == 3 and p.severity == "error" for p in problems)
    assert any(p.file == str(split) and p.line == 5 and "already listed on line 1" in p.message for p in problems)
    assert not any("broken.jpg" in p.file for p in problems)  # headers are fine
    assert summarize_problems(problems) == "4 errors, 2 warnings, 1 info"


def test_check_decode_finds_truncated(dataset: tuple[Path, Path, Path]) -> None:
    csv, images, _ = dataset
    result = run_check(csv, images, decode=True)
    broken = [p for p in result.problems if p.file == str(images / "broken.jpg")]
    assert len(broken) == 1 and "truncated" in broken[0].message and broken[0].severity == "error"
    assert not result.ok
    np.testing.assert_array_equal(result.records["a.jpg"].boxes, [[1, 1, 10, 10], [30, 20, 40, 30]])
    assert result.num_images_checked == 2  # a.jpg and b.jpg
    # no split: unannotated images are counted once, as info
    info = [p for p in result.problems if p.severity == "info"]
    assert len(info) == 1 and info[0].message.startswith("1 image(s) without annotations (e.g. c.jpg)")
    assert result.summary().startswith("4 annotated images, 5 boxes, 2 images read: 4 errors")


def test_check_clean_dataset_is_ok(tmp_path: Path) -> None:
    images = tmp_path / "im"
    images.mkdir()
    Image.new("RGB", (20, 20)).save(images / "x.png")
    (tmp_path / "a.csv").write_text("x.png,0,0,20,20\n")
    result = run_check(tmp_path / "a.csv", images)
    assert result.problems == [] and result.ok
    assert result.counts() == {"error": 0, "warning": 0, "info": 0}


def test_check_unreadable_inputs_become_problems(tmp_path: Path) -> None:
    (tmp_path / "im").mkdir()
    problems = check_dataset(tmp_path / "none.csv", tmp_path / "im")
    assert len(problems) == 1 and problems[0].severity == "error" and "file not found" in problems[0].message
    problems = check_dataset(tmp_path / "none.csv", tmp_path / "noimages")
    assert problems[0].message == "images folder not found"


def test_real_dataset_dev_split_is_clean(det_data_dir: Path) -> None:
    result = run_check(det_data_dir / "annotations" / "train.csv", det_data_dir / "images",
                       split=det_data_dir / "splits" / "dev.txt")
    assert [p for p in result.problems if p.severity == "error"] == []
    assert sum(len(r) for r in result.records.values()) == 4462


def test_samples_are_valid(samples_dir: Path) -> None:
    records, problems = read_icartoon_csv(samples_dir / "annotations.csv")
    assert problems == [] and len(records) == 5
    assert sorted(len(r) for r in records.values()) == [1, 2, 3, 3, 4]
    assert run_check(samples_dir / "annotations.csv", samples_dir).problems == []
    for name in records:
        path = samples_dir / name
        assert path.stat().st_size < 80_000
        h, w, _ = load_image(path).shape
        assert 500 <= w <= 900 and 400 <= h <= 520


# ---------------------------------------------------------------- stats


def _stat_records() -> list[ImageRecord]:
    return [
        ImageRecord("a.jpg", [[0, 0, 10, 10], [0, 0, 10, 30], [0, 0, 40, 10]], width=100, height=100),
        ImageRecord("b.jpg", [[0, 0, 20, 20]], width=100, height=100),
        ImageRecord("c.jpg", []),
    ]


def test_dataset_stats_numbers() -> None:
    s = dataset_stats(_stat_records())
    assert (s["num_images"], s["num_images_with_faces"], s["num_faces"]) == (3, 2, 4)
    assert s["faces_per_image"] == {"mean": pytest.approx(4 / 3), "max": 3, "histogram": {0: 1, 1: 1, 3: 1}}
    # sizes sqrt(w*h): 10, 17.3, 20, 20; aspect h/w: 1, 3, 0.25, 1
    assert s["face_size"]["min"] == pytest.approx(10) and s["face_size"]["max"] == pytest.approx(20)
    assert s["aspect_ratio"]["frac_above_2"] == pytest.approx(0.25)
    assert s["aspect_ratio"]["frac_below_0.5"] == pytest.approx(0.25)
    assert s["aspect_ratio"]["frac_tails"] == pytest.approx(0.5)
    assert s["size_bins"] == {"tiny": 1, "small": 3, "medium": 0, "large": 0}
    assert s["relative_face_size"]["max"] == pytest.approx(0.2)
    json.dumps(s)  # serialisable


def test_dataset_stats_empty() -> None:
    s = dataset_stats({})
    assert s["num_faces"] == 0 and s["face_size"] == {} and s["aspect_ratio"]["frac_tails"] == 0.0


def test_plot_stats_writes_pngs(tmp_path: Path) -> None:
    files = plot_stats(_stat_records(), tmp_path / "plots")
    names = [f.name for f in files]
    assert names == ["faces_per_image.png", "face_size.png", "aspect_ratio.png", "relative_face_size.png"]
    for f in files:
        with Image.open(f) as im:
            assert im.format == "PNG" and im.size[0] >= 400
    # without image sizes there is no relative-size plot; no faces at all still plots
    assert len(plot_stats([ImageRecord("x.jpg", [])], tmp_path / "p2")) == 3
