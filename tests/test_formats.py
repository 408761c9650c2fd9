"""acfd.data.formats: readers, writers, round trips and bad rows with their line numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from acfd.data.formats import (
    AnnotationError,
    ImageRecord,
    Problem,
    clip_to_image,
    fill_image_sizes,
    guess_format,
    read_annotations,
    read_coco,
    read_icartoon_csv,
    read_split,
    read_voc,
    read_yolo,
    write_annotations,
    write_coco,
    write_coco_results,
    write_icartoon_csv,
    write_voc,
    write_yolo,
)

SIZES = {"a.jpg": (64, 48), "b.jpg": (40, 30), "c.png": (32, 32)}


def _records(sizes: bool = True) -> dict[str, ImageRecord]:
    recs = {
        "a.jpg": ImageRecord("a.jpg", np.array([[1, 2, 30, 40], [10, 5, 60, 45]], np.float32)),
        "b.jpg": ImageRecord("b.jpg", np.array([[0, 0, 40, 30]], np.float32)),
        "c.png": ImageRecord("c.png", np.zeros((0, 4), np.float32)),
    }
    if sizes:
        for name, (w, h) in SIZES.items():
            recs[name].width, recs[name].height = w, h
    return recs


@pytest.fixture()
def images_dir(tmp_path: Path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    for name, (w, h) in SIZES.items():
        Image.new("RGB", (w, h), (10, 20, 30)).save(d / name)
    return d


def _by_line(problems: list[Problem]) -> dict[int | None, Problem]:
    return {p.line: p for p in problems}


# ---------------------------------------------------------------- records and problems


def test_image_record_coerces_and_validates() -> None:
    r = ImageRecord("x.jpg", [[1, 2, 3, 4]])
    assert r.boxes.dtype == np.float32 and r.boxes.shape == (1, 4) and len(r) == 1
    assert ImageRecord("e.jpg", []).boxes.shape == (0, 4)
    with pytest.raises(ValueError, match="x.jpg"):
        ImageRecord("x.jpg", [[1, 2, 3]])
    with pytest.raises(ValueError, match="scores"):
        ImageRecord("x.jpg", [[1, 2, 3, 4]], scores=[0.1, 0.2])
    assert ImageRecord("x.jpg", [[1, 2, 3, 4]]) == ImageRecord("x.jpg", [[1, 2, 3, 4]])
    assert ImageRecord("x.jpg", [[1, 2, 3, 4]]) != ImageRecord("x.jpg", [[1, 2, 3, 5]])


def test_problem_str() -> None:
    assert str(Problem("a.csv", 3, "bad", "error")) == "a.csv:3: error: bad"
    assert str(Problem("a.jpg", None, "missing")) == "a.jpg: warning: missing"


# ---------------------------------------------------------------- iCartoonFace CSV


def test_icartoon_reads_three_layouts(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("a.jpg,1,2,30,40\na.jpg,10,5,60,45\nb.jpg,0,0,40,30\n")
    recs, problems = read_icartoon_csv(p)
    assert problems == []
    assert list(recs) == ["a.jpg", "b.jpg"]
    np.testing.assert_array_equal(recs["a.jpg"].boxes, [[1, 2, 30, 40], [10, 5, 60, 45]])
    assert recs["a.jpg"].scores is None

    p.write_text("a.jpg,1,2,30,40,face\n")
    recs, problems = read_icartoon_csv(p)
    assert problems == [] and recs["a.jpg"].scores is None

    p.write_text("a.jpg,1,2,30,40,face,0.25\na.jpg,3,4,20,20,face,0.9\n")
    recs, problems = read_icartoon_csv(p)
    assert problems == []
    np.testing.assert_allclose(recs["a.jpg"].scores, [0.25, 0.9])


def test_icartoon_bad_rows_reported_with_lines(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(
        "a.jpg,1,2,30,40\n"  # 1 ok
        "a.jpg,30,2,10,40\n"  # 2 x2 <= x1
        "a.jpg,1,40,30,40\n"  # 3 y2 == y1
        "a.jpg,1,two,30,40\n"  # 4 non-numeric
        "a.jpg,1,2,30\n"  # 5 too few columns
        "a.jpg,1,2,30,40,face,0.5,extra\n"  # 6 too many columns
        "\n"  # 7 blank
        "a.jpg,1,2,30,40\n"  # 8 duplicate of line 1
        "b.jpg,-5,-1,20,20\n"  # 9 negative -> clipped
        ",1,2,3,4\n"  # 10 no file name
        "b.jpg,1,2,nan,4\n"  # 11 nan
        "b.jpg,1,2,3,4,car\n"  # 12 other class: kept, warned
    )
    recs, problems = read_icartoon_csv(p)
    by = _by_line(problems)
    assert all(pr.file == str(p) for pr in problems)
    assert set(by) == {2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
    assert by[2].severity == "error" and "x2 > x1" in by[2].message
    assert by[3].severity == "error" and "empty box" in by[3].message
    assert by[4].severity == "error" and "non-numeric" in by[4].message and "two" in by[4].message
    assert by[5].severity == "error" and "got 4" in by[5].message
    assert by[6].severity == "error" and "got 8" in by[6].message
    assert by[7].severity == "info" and "blank" in by[7].message
    assert by[8].severity == "warning" and "duplicate of line 1" in by[8].message
    assert by[9].severity == "warning" and "negative" in by[9].message
    assert by[10].severity == "error" and "file name" in by[10].message
    assert by[11].severity == "error"
    assert by[12].severity == "warning" and "car" in by[12].message
    np.testing.assert_array_equal(recs["a.jpg"].boxes, [[1, 2, 30, 40]])
    np.testing.assert_array_equal(recs["b.jpg"].boxes, [[0, 0, 20, 20], [1, 2, 3, 4]])


def test_icartoon_crlf_bom_spaces_header(tmp_path: Path) -> None:
    p = tmp_path / "w.csv"
    p.write_bytes(b"\xef\xbb\xbffilename,x1,y1,x2,y2\r\na.jpg, 1, 2, 30, 40\r\nb.jpg,0,0,4,3\r\n")
    recs, problems = read_icartoon_csv(p)
    assert list(recs) == ["a.jpg", "b.jpg"]  # no BOM in the name, no '\r' anywhere
    np.testing.assert_array_equal(recs["a.jpg"].boxes, [[1, 2, 30, 40]])
    assert [(pr.line, pr.severity) for pr in problems] == [(1, "info")]


def test_icartoon_mixed_score_layout(tmp_path: Path) -> None:
    p = tmp_path / "m.csv"
    p.write_text("a.jpg,1,2,30,40,face,0.5\na.jpg,1,2,3,4\na.jpg,1,2,30,40,face,high\n")
    recs, problems = read_icartoon_csv(p)
    assert [(pr.line, pr.severity) for pr in problems] == [(2, "error"), (3, "error")]
    assert "line 1" in problems[0].message
    assert len(recs["a.jpg"]) == 1


def test_icartoon_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="nope.csv: file not found"):
        read_icartoon_csv(tmp_path / "nope.csv")


def test_icartoon_latin1_reported(tmp_path: Path) -> None:
    p = tmp_path / "l.csv"
    p.write_bytes("caf\u00e9.jpg,1,2,3,4\n".encode("latin-1"))
    recs, problems = read_icartoon_csv(p)
    assert "caf\u00e9.jpg" in recs
    assert len(problems) == 1 and "UTF-8" in problems[0].message


@pytest.mark.parametrize("kind", ["train", "gt"])
def test_icartoon_round_trip(tmp_path: Path, kind: str) -> None:
    recs = _records(sizes=False)
    p = tmp_path / "out.csv"
    write_icartoon_csv(p, recs, kind=kind)
    lines = p.read_text().splitlines()
    assert lines[0] == ("a.jpg,1,2,30,40" + (",face" if kind == "gt" else ""))
    back, problems = read_icartoon_csv(p)
    assert problems == []
    del recs["c.png"]  # no boxes: not expressible in this format
    assert back == recs


def test_icartoon_integer_rounding_keeps_a_pixel(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    write_icartoon_csv(p, [ImageRecord("a.jpg", [[1.4, 2.6, 1.45, 9.5]])])
    assert p.read_text() == "a.jpg,1,3,2,10\n"


def test_icartoon_submission_sorted_by_score(tmp_path: Path) -> None:
    rec = ImageRecord("a.jpg", [[1, 1, 5, 5], [2, 2, 6.5, 6], [3, 3, 7, 7]], scores=[0.2, 0.9, 0.123456789])
    p = tmp_path / "s.csv"
    write_icartoon_csv(p, {"a.jpg": rec}, kind="submission")
    lines = p.read_text().splitlines()
    assert lines == [
        "a.jpg,2,2,6.5,6,face,0.900000",
        "a.jpg,1,1,5,5,face,0.200000",
        "a.jpg,3,3,7,7,face,0.123457",
    ]
    back, problems = read_icartoon_csv(p)
    assert problems == []
    np.testing.assert_allclose(back["a.jpg"].scores, [0.9, 0.2, 0.123457], atol=1e-6)
    with pytest.raises(ValueError, match="no scores"):
        write_icartoon_csv(p, [ImageRecord("b.jpg", [[1, 1, 2, 2]])], kind="submission")
    with pytest.raises(ValueError, match="kind"):
        write_icartoon_csv(p, [], kind="nope")


def test_icartoon_write_is_atomic(tmp_path: Path) -> None:
    p = tmp_path / "s.csv"
    p.write_text("old\n")
    with pytest.raises(ValueError):
        write_icartoon_csv(p, [ImageRecord("b.jpg", [[1, 1, 2, 2]])], kind="submission")
    assert p.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [p]


def test_real_train_csv(det_data_dir: Path) -> None:
    recs, problems = read_icartoon_csv(det_data_dir / "annotations" / "train.csv")
    assert [p for p in problems if p.severity == "error"] == []
    assert sum(len(r) for r in recs.values()) == 4462
    assert len(recs) <= 2525


def test_clip_to_image(tmp_path: Path, images_dir: Path) -> None:
    recs = {
        "a.jpg": ImageRecord("a.jpg", [[1, 2, 30, 40], [50, 40, 70, 60], [100, 100, 120, 120]]),
        "b.jpg": ImageRecord("b.jpg", [[0, 0, 10, 10]], scores=[0.5]),
        "gone.jpg": ImageRecord("gone.jpg", [[0, 0, 10, 10]]),
    }
    (images_dir / "bad.jpg").write_text("text")
    recs["bad.jpg"] = ImageRecord("bad.jpg", [[0, 0, 1, 1]])
    problems = clip_to_image(recs, images_dir)
    msgs = {Path(p.file).name: p for p in problems if p.severity == "error" and "outside" not in p.message}
    assert "not found" in msgs["gone.jpg"].message and "not an image" in msgs["bad.jpg"].message
    clipped = [p for p in problems if "clipped" in p.message]
    removed = [p for p in problems if "removed" in p.message]
    assert len(clipped) == 1 and clipped[0].message.startswith("1 box") and "64x48" in clipped[0].message
    assert len(removed) == 1 and removed[0].severity == "error"
    np.testing.assert_array_equal(recs["a.jpg"].boxes, [[1, 2, 30, 40], [50, 40, 64, 48]])
    assert (recs["a.jpg"].width, recs["a.jpg"].height) == (64, 48)
    assert len(recs["gone.jpg"]) == 1  # left alone


# ---------------------------------------------------------------- COCO


def test_coco_round_trip(tmp_path: Path) -> None:
    recs = _records()
    p = tmp_path / "c.json"
    ids = write_coco(p, recs)
    assert ids == {"a.jpg": 1, "b.jpg": 2, "c.png": 3}
    data = json.loads(p.read_text())
    assert data["categories"] == [{"id": 1, "name": "face", "supercategory": "face"}]
    assert data["annotations"][0]["bbox"] == [1, 2, 29, 38]
    assert data["images"][0] == {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}
    back, problems = read_coco(p)
    assert problems == []
    assert back == recs  # including the image without faces and the sizes


def test_coco_needs_sizes(tmp_path: Path, images_dir: Path) -> None:
    with pytest.raises(ValueError, match="image sizes"):
        write_coco(tmp_path / "c.json", _records(sizes=False))
    write_coco(tmp_path / "c.json", _records(sizes=False), images_dir=images_dir)
    back, _ = read_coco(tmp_path / "c.json")
    assert (back["b.jpg"].width, back["b.jpg"].height) == (40, 30)


def test_coco_bad_entries(tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}, {"id": 2}],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 5]},
            {"id": 8, "image_id": 9, "category_id": 1, "bbox": [1, 1, 2, 2]},
            {"id": 9, "image_id": 1, "category_id": 1, "bbox": [1, "x", 2, 2]},
            {"id": 10, "image_id": 1, "category_id": 2, "bbox": [1, 1, 2, 2]},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]},
            {"id": 12, "image_id": 1, "category_id": 1, "bbox": [0, 0, 9, 9], "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "face"}, {"id": 2, "name": "body"}],
    }
    p.write_text(json.dumps(data))
    recs, problems = read_coco(p)
    text = "\n".join(str(x) for x in problems)
    assert "images[1]" in text and "annotations[0] (id 7): empty box" in text
    assert "annotations[1] (id 8): unknown image_id 9" in text and "annotations[2] (id 9): bbox" in text
    assert "1 annotation(s) of other categories ignored" in text
    assert "1 crowd annotation(s) (iscrowd=1) ignored" in text
    np.testing.assert_array_equal(recs["a.jpg"].boxes, [[1, 1, 3, 3]])


def test_coco_file_errors(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text('{"images": [\n  1,,]}')
    with pytest.raises(AnnotationError, match=r"x.json:2: invalid JSON"):
        read_coco(p)
    p.write_text("[]")
    with pytest.raises(AnnotationError, match="results"):
        read_coco(p)


def test_coco_results(tmp_path: Path) -> None:
    gt = tmp_path / "gt.json"
    write_coco(gt, _records())
    preds = [ImageRecord("b.jpg", [[1, 2, 11, 22]], scores=[0.75]), ImageRecord("c.png", [], scores=[])]
    n = write_coco_results(tmp_path / "r.json", preds, gt)
    assert n == 1
    assert json.loads((tmp_path / "r.json").read_text()) == [
        {"image_id": 2, "category_id": 1, "bbox": [1, 2, 10, 20], "score": 0.75}
    ]
    with pytest.raises(ValueError, match="zzz.jpg"):
        write_coco_results(tmp_path / "r.json", [ImageRecord("zzz.jpg", [[1, 1, 2, 2]], scores=[1])], {"a.jpg": 1})


# ---------------------------------------------------------------- YOLO


def test_yolo_round_trip(tmp_path: Path, images_dir: Path) -> None:
    labels = tmp_path / "labels"
    files = write_yolo(labels, _records(sizes=False), images_dir=images_dir)
    assert sorted(f.name for f in files) == ["a.txt", "b.txt", "c.txt"]
    assert (labels / "b.txt").read_text() == "0 0.500000 0.500000 1.000000 1.000000\n"
    assert (labels / "c.txt").read_text() == ""
    back, problems = read_yolo(labels, images_dir)
    assert problems == []
    recs = _records()
    assert back.keys() == recs.keys()
    for name in recs:
        np.testing.assert_allclose(back[name].boxes, recs[name].boxes, atol=1e-3)
        assert (back[name].width, back[name].height) == SIZES[name]


def test_yolo_bad_rows(tmp_path: Path, images_dir: Path) -> None:
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.txt").write_text(
        "0 0.5 0.5 0.5 0.5\n"  # 1 ok
        "0 0.5 0.5\n"  # 2 too few
        "0 0.5 x 0.1 0.1\n"  # 3 non-numeric
        "1 0.5 0.5 0.1 0.1\n"  # 4 other class
        "0 0.5 0.5 0 0.1\n"  # 5 empty
        "0 0.95 0.5 0.2 0.2\n"  # 6 outside -> clipped
    )
    (labels / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    recs, problems = read_yolo(labels, images_dir)
    by = {(Path(p.file).name, p.line): p for p in problems}
    assert by[("a.txt", 2)].severity == "error" and by[("a.txt", 3)].severity == "error"
    assert by[("a.txt", 4)].severity == "info" and by[("a.txt", 5)].severity == "error"
    assert "clipped" in by[("a.txt", 6)].message
    assert "without a matching image" in by[("orphan.txt", None)].message
    np.testing.assert_allclose(recs["a.jpg"].boxes, [[16, 12, 48, 36], [54.4, 19.2, 64, 28.8]], atol=1e-3)
    assert len(recs["b.jpg"]) == 0  # no label file: no faces


def test_yolo_needs_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image sizes"):
        write_yolo(tmp_path / "l", _records(sizes=False))


# ---------------------------------------------------------------- VOC


def test_voc_round_trip(tmp_path: Path) -> None:
    recs = _records()
    recs["sub/d.jpg"] = ImageRecord("sub/d.jpg", [[1.5, 2, 3, 4]])
    out = tmp_path / "xml"
    files = write_voc(out, recs)
    assert (out / "sub" / "d.xml") in files
    back, problems = read_voc(out)
    assert problems == []
    assert back == recs


def test_voc_bad_files(tmp_path: Path) -> None:
    d = tmp_path / "xml"
    d.mkdir()
    (d / "broken.xml").write_text("<annotation>\n<filename>x.jpg</filename>\n<object>\n</annotation>")
    (d / "bad.xml").write_text(
        "<annotation><filename>y.jpg</filename>"
        "<object><name>face</name><bndbox><xmin>5</xmin><ymin>1</ymin><xmax>2</xmax><ymax>9</ymax></bndbox></object>"
        "<object><name>face</name><bndbox><xmin>a</xmin></bndbox></object>"
        "<object><name>Face</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>9</ymax></bndbox></object>"
        "<object><name>cat</name></object></annotation>"
    )
    recs, problems = read_voc(d)
    by = {(Path(p.file).name, p.message.split(":")[0]): p for p in problems}
    broken = [p for p in problems if p.file.endswith("broken.xml")]
    assert len(broken) == 1 and broken[0].line == 4 and broken[0].severity == "error"
    assert by[("bad.xml", "object 1")].severity == "error"
    assert by[("bad.xml", "object 2")].severity == "error"
    assert any("not named 'face'" in p.message for p in problems)
    np.testing.assert_array_equal(recs["y.jpg"].boxes, [[1, 1, 2, 9]])
    assert recs["y.jpg"].width is None


# ---------------------------------------------------------------- dispatch and splits


@pytest.mark.parametrize("fmt,target", [("icartoon", "x.csv"), ("coco", "x.json"), ("yolo", "lab"), ("voc", "xml")])
def test_dispatch_round_trip(tmp_path: Path, images_dir: Path, fmt: str, target: str) -> None:
    recs = _records()
    path = tmp_path / target
    write_annotations(path, recs, fmt, images_dir=images_dir)
    back, problems = read_annotations(path, None if fmt != "yolo" else "yolo", images_dir=images_dir)
    assert guess_format(path) == fmt
    assert problems == []
    expected = {k: v for k, v in recs.items() if fmt != "icartoon" or len(v)}
    assert back.keys() == expected.keys()
    for k in expected:
        np.testing.assert_allclose(back[k].boxes, expected[k].boxes, atol=1e-3)


def test_dispatch_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown annotation format 'xyz'"):
        read_annotations(tmp_path / "a.csv", "xyz")
    with pytest.raises(ValueError, match="cannot guess"):
        guess_format(tmp_path / "a.dat")
    (tmp_path / "lab").mkdir()
    with pytest.raises(ValueError, match="images folder"):
        read_annotations(tmp_path / "lab", "yolo")


def test_read_split(tmp_path: Path) -> None:
    p = tmp_path / "s.txt"
    p.write_bytes(b"\xef\xbb\xbfa.jpg\r\n\r\n  b.jpg  \r\na.jpg\r\n")
    assert read_split(p) == ["a.jpg", "b.jpg"]
    with pytest.raises(AnnotationError, match="file not found"):
        read_split(tmp_path / "none.txt")


def test_write_annotations_icartoon_with_scores_is_a_submission(tmp_path: Path) -> None:
    recs = [ImageRecord("a.jpg", [[1, 2, 3, 4], [5, 6, 7, 8]], scores=[0.1, 0.7])]
    write_annotations(tmp_path / "p.csv", recs, "csv")
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "a.jpg,5,6,7,8,face,0.700000"


def test_fill_image_sizes_reports_missing(images_dir: Path) -> None:
    recs = {"b.jpg": ImageRecord("b.jpg", []), "zz.jpg": ImageRecord("zz.jpg", [])}
    problems = fill_image_sizes(recs, images_dir)
    assert [(Path(p.file).name, p.severity, p.message) for p in problems] == [("zz.jpg", "error", "file not found")]
    assert (recs["b.jpg"].width, recs["b.jpg"].height) == (40, 30)


def test_icartoon_bom_without_header(tmp_path: Path) -> None:
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbfa.jpg,1,2,30,40\r\n")
    recs, problems = read_icartoon_csv(p)
    assert list(recs) == ["a.jpg"] and problems == []


def test_duplicate_submission_rows_are_kept_and_reported(tmp_path: Path) -> None:
    """The official scorer sees every submitted row: a repeated detection must stay (as an FP)."""
    from acfd.evaluation.icartoonface import evaluate_official

    gt = tmp_path / "gt.csv"
    gt.write_text("a.jpg,10,10,50,50,face\n")
    pred = tmp_path / "pred.csv"
    pred.write_text("a.jpg,10,10,50,50,face,0.9\na.jpg,10,10,50,50,face,0.9\n")
    gts, _ = read_icartoon_csv(gt)
    preds, problems = read_icartoon_csv(pred)
    assert len(preds["a.jpg"].boxes) == 2
    assert any(p.line == 2 and "kept" in p.message for p in problems)
    result = evaluate_official(gts, preds)
    assert result.tp == 1 and result.fp == 1


def test_duplicate_annotation_rows_are_dropped_and_reported(tmp_path: Path) -> None:
    ann = tmp_path / "train.csv"
    ann.write_text("a.jpg,10,10,50,50\na.jpg,10,10,50,50\n")
    records, problems = read_icartoon_csv(ann)
    assert len(records["a.jpg"].boxes) == 1
    assert any(p.line == 2 and "dropped" in p.message for p in problems)
