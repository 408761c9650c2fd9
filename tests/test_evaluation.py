"""Official iCartoonFace protocol, COCO metrics, PR plots and reports: hand-computable cases."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest

from acfd.data.formats import ImageRecord
from acfd.evaluation.coco import build_coco_dicts, coco_metrics
from acfd.evaluation.icartoonface import (
    OfficialResult,
    bbox_overlaps,
    evaluate_breakdown,
    evaluate_official,
    face_subsets,
    match_image,
    voc_ap,
)
from acfd.evaluation.plots import plot_pr_curve, pr_curve_figure
from acfd.evaluation.report import format_report, pct, report_dict


def rec(name: str, boxes: list, scores: list | None = None, **kw: int) -> ImageRecord:
    return ImageRecord(name, np.asarray(boxes, np.float32).reshape(-1, 4),
                       None if scores is None else np.asarray(scores, np.float32), **kw)


FACE_A = [0, 0, 99, 99]
FACE_B = [200, 0, 299, 99]


# ---------------------------------------------------------------- IoU and AP primitives


def test_bbox_overlaps_plus_one_values() -> None:
    iou = bbox_overlaps(np.array([[0, 0, 9, 9]]), np.array([[0, 0, 9, 9], [5, 0, 14, 9], [20, 20, 30, 30]]))
    # +1 convention: areas 10*10 = 100, intersection 5*10 = 50 -> 50 / 150.
    np.testing.assert_allclose(iou, [[1.0, 1 / 3, 0.0]])
    assert bbox_overlaps(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)


def test_plus_one_convention_decides_a_match() -> None:
    gt_box, det_box = [0, 0, 9, 9], [0, 0, 9, 4.2]
    plain = (9 * 4.2) / (9 * 9)  # IoU without +1: 0.467 < 0.5
    assert plain < 0.5
    assert bbox_overlaps(np.array([det_box]), np.array([gt_box]))[0, 0] == pytest.approx(0.52)
    res = evaluate_official({"a": rec("a", [gt_box])}, {"a": rec("a", [det_box], [0.9])})
    assert (res.tp, res.fp, res.ap) == (1, 0, 1.0)


def test_voc_ap_uses_precision_envelope() -> None:
    # envelope of [1, .5, .75] is [1, .75, .75]; all-point area = .25 + .25*.75 + .25*.75
    assert voc_ap(np.array([0.25, 0.5, 0.75]), np.array([1.0, 0.5, 0.75])) == pytest.approx(0.625)
    assert voc_ap(np.zeros(0), np.zeros(0)) == 0.0


# ---------------------------------------------------------------- official protocol


def test_perfect_detections() -> None:
    gt = {"a": rec("a", [FACE_A, FACE_B]), "b": rec("b", [FACE_A])}
    pred = {"a": rec("a", [FACE_A, FACE_B], [0.9, 0.8]), "b": rec("b", [FACE_A], [0.7])}
    res = evaluate_official(gt, pred)
    assert res.ap == 1.0
    assert (res.num_gt, res.num_det, res.tp, res.fp) == (3, 3, 3, 0)
    np.testing.assert_allclose(res.precision, 1.0)
    np.testing.assert_allclose(res.recall, [1 / 3, 2 / 3, 1.0])


def test_all_wrong_detections() -> None:
    gt = {"a": rec("a", [FACE_A])}
    pred = {"a": rec("a", [[500, 500, 600, 600], [50, 50, 149, 149]], [0.9, 0.8])}  # 2nd: IoU ~0.14
    res = evaluate_official(gt, pred)
    assert res.ap == 0.0
    assert (res.tp, res.fp) == (0, 2)


def test_duplicate_detection_is_false_positive() -> None:
    gt = {"a": rec("a", [FACE_A, FACE_B])}
    pred = {"a": rec("a", [FACE_A, [1, 1, 99, 99], FACE_B], [0.9, 0.8, 0.7])}
    res = evaluate_official(gt, pred)
    assert (res.tp, res.fp) == (2, 1)
    np.testing.assert_allclose(res.precision, [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(res.recall, [0.5, 0.5, 1.0])
    assert res.ap == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


def test_taken_face_does_not_fall_back_to_second_best() -> None:
    # Second detection overlaps face A most (IoU .90, taken) and face B with IoU .74: still a FP.
    a, b = [0, 0, 99, 99], [20, 0, 119, 99]
    det2 = [5, 0, 104, 99]
    ious = bbox_overlaps(np.array([det2]), np.array([a, b]))[0]
    assert ious[0] > ious[1] > 0.5
    res = evaluate_official({"x": rec("x", [a, b])}, {"x": rec("x", [a, det2], [0.9, 0.8])})
    assert (res.tp, res.fp) == (1, 1)


def test_file_order_not_score_order_assigns_faces() -> None:
    # Both detections hit the one face; the FIRST in the file takes it although its score is lower.
    gt = {"a": rec("a", [FACE_A])}
    pred = {"a": rec("a", [FACE_A, [2, 2, 99, 99]], [0.3, 0.9])}
    res = evaluate_official(gt, pred)
    # ranked: 0.9 (FP, second in file), 0.3 (TP): precision [0, .5], recall [0, 1] -> AP 0.5
    np.testing.assert_allclose(res.scores, [0.9, 0.3], rtol=1e-6)
    np.testing.assert_allclose(res.precision, [0.0, 0.5])
    np.testing.assert_allclose(res.recall, [0.0, 1.0])
    assert res.ap == pytest.approx(0.5)  # score-order matching would give 1.0
    np.testing.assert_array_equal(match_image(gt["a"].boxes, pred["a"].boxes), [1, 0])


def test_score_ties_keep_prediction_order() -> None:
    gt = {"a": rec("a", [FACE_A]), "b": rec("b", [FACE_A])}
    fp_first = {"a": rec("a", [FACE_B], [0.5]), "b": rec("b", [FACE_A], [0.5])}
    tp_first = {"b": fp_first["b"], "a": fp_first["a"]}
    # FP then TP: precision [0, .5], recall [0, .5] -> AP .25; TP then FP: AP .5
    assert evaluate_official(gt, fp_first).ap == pytest.approx(0.25)
    assert evaluate_official(gt, tp_first).ap == pytest.approx(0.5)


def test_detections_on_images_without_gt_are_ignored() -> None:
    gt = {"a": rec("a", [FACE_A]), "empty": rec("empty", [])}
    pred = {
        "extra": rec("extra", [FACE_A, FACE_B], [0.99, 0.98]),
        "empty": rec("empty", [FACE_A], [0.97]),
        "a": rec("a", [FACE_A], [0.5]),
    }
    res = evaluate_official(gt, pred)
    assert (res.ap, res.num_det, res.fp, res.num_gt) == (1.0, 1, 0, 1)


def test_gt_images_without_detections_lower_recall() -> None:
    gt = {"a": rec("a", [FACE_A]), "b": rec("b", [FACE_A, FACE_B])}
    res = evaluate_official(gt, {"a": rec("a", [FACE_A], [0.9])})
    assert res.num_gt == 3
    assert res.max_recall == pytest.approx(1 / 3)
    assert res.ap == pytest.approx(1 / 3)


def test_no_detections_and_no_gt() -> None:
    res = evaluate_official({"a": rec("a", [FACE_A])}, {})
    assert (res.ap, res.num_det, res.tp) == (0.0, 0, 0)
    empty = evaluate_official({}, {"a": rec("a", [FACE_A], [0.9])})
    assert np.isnan(empty.ap) and empty.num_det == 0


def test_prediction_without_scores_ranks_in_file_order() -> None:
    gt = {"a": rec("a", [FACE_A])}
    assert evaluate_official(gt, {"a": rec("a", [FACE_A, FACE_B])}).ap == 1.0
    assert evaluate_official(gt, {"a": rec("a", [FACE_B, FACE_A])}).ap == pytest.approx(0.5)


def test_bad_input_raises_value_error_naming_the_image() -> None:
    gt = {"img7.jpg": rec("img7.jpg", [FACE_A])}
    bad = rec("img7.jpg", [FACE_A], [0.5])
    bad.scores = np.array([np.nan], np.float32)
    with pytest.raises(ValueError, match="img7.jpg"):
        evaluate_official(gt, {"img7.jpg": bad})
    with pytest.raises(ValueError, match="iou_threshold"):
        evaluate_official(gt, {}, iou_threshold=0.0)


# ---------------------------------------------------------------- breakdown


def test_face_subsets() -> None:
    s = face_subsets(np.array([[0, 0, 20, 20], [0, 0, 100, 100], [0, 0, 40, 120], [0, 0, 10, 30]]))
    np.testing.assert_array_equal(s["small"], [True, False, False, True])
    np.testing.assert_array_equal(s["extreme_aspect"], [False, False, True, True])
    np.testing.assert_array_equal(s["other"], [False, True, False, False])


def test_breakdown_ignores_faces_outside_the_subset() -> None:
    small, large, tall = [300, 300, 320, 320], [0, 0, 100, 100], [150, 0, 190, 120]
    false_alarm = [400, 0, 500, 100]  # large box on nothing
    gt = {"a": rec("a", [small, large, tall])}
    pred = {"a": rec("a", [large, tall, false_alarm], [0.9, 0.8, 0.95])}
    out = evaluate_breakdown(gt, pred)
    assert list(out) == ["all", "small", "extreme_aspect", "other"]
    # small face missed; detections on large/tall faces and the large false alarm are ignored
    assert (out["small"].num_gt, out["small"].num_det, out["small"].ap) == (1, 0, 0.0)
    # tall face found; detection on the large face ignored; large false alarm ignored (not tall)
    assert (out["extreme_aspect"].num_gt, out["extreme_aspect"].tp, out["extreme_aspect"].fp) == (1, 1, 0)
    assert out["extreme_aspect"].ap == 1.0
    # large face found after the (large) false alarm: precision [0, .5] -> AP .5
    assert (out["other"].num_gt, out["other"].tp, out["other"].fp) == (1, 1, 1)
    assert out["other"].ap == pytest.approx(0.5)
    full = evaluate_official(gt, pred)
    assert out["all"].ap == full.ap and (out["all"].tp, out["all"].fp) == (full.tp, full.fp)


def test_breakdown_empty_subset_is_nan() -> None:
    out = evaluate_breakdown({"a": rec("a", [FACE_A])}, {"a": rec("a", [FACE_A], [0.9])})
    assert np.isnan(out["small"].ap) and out["small"].num_gt == 0
    assert out["other"].ap == 1.0


# ---------------------------------------------------------------- agreement with pycocotools


def _well_separated_case(seed: int = 0) -> tuple[dict[str, ImageRecord], dict[str, ImageRecord]]:
    """Faces in separate 200-px cells; detections sorted by score (file order == score order)."""
    rng = np.random.default_rng(seed)
    gt, pred = {}, {}
    for i in range(8):
        faces, dets, scores = [], [], []
        for cy in range(3):
            for cx in range(3):
                x0, y0 = 200 * cx + 20, 200 * cy + 20
                w, h = rng.uniform(70, 140, size=2)
                box = np.array([x0, y0, x0 + w, y0 + h])
                kind = rng.choice(["hit", "miss", "bad", "empty"], p=[0.55, 0.1, 0.15, 0.2])
                if kind == "empty":
                    dets.append(box)  # false alarm in a cell without face
                    scores.append(rng.uniform())
                    continue
                faces.append(box)
                if kind == "hit":
                    dets.append(box + rng.uniform(-3, 3, size=4))
                    scores.append(rng.uniform())
                elif kind == "bad":  # shifted by half a face: IoU ~ 1/3
                    dets.append(box + np.array([w / 2, 0, w / 2, 0]))
                    scores.append(rng.uniform())
        name = f"img{i}.jpg"
        order = np.argsort(-np.asarray(scores))
        gt[name] = rec(name, np.asarray(faces).reshape(-1, 4), width=640, height=640)
        pred[name] = rec(name, np.asarray(dets).reshape(-1, 4)[order], np.asarray(scores)[order])
    return gt, pred


def _pycocotools_stats(gt: dict, pred: dict) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset, results = build_coco_dicts(gt, pred)
    with contextlib.redirect_stdout(io.StringIO()):
        cgt = COCO()
        cgt.dataset = copy.deepcopy(dataset)
        cgt.createIndex()
        cdt = cgt.loadRes(copy.deepcopy(results))
        ev = COCOeval(cgt, cdt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def test_official_ap_agrees_with_pycocotools_where_protocols_coincide() -> None:
    pytest.importorskip("pycocotools")
    gt, pred = _well_separated_case()
    official = evaluate_official(gt, pred)
    assert 0.3 < official.ap < 0.95 and official.fp > 0  # a non-trivial case
    # pycocotools interpolates at 101 recall points, the official protocol integrates all points
    assert official.ap == pytest.approx(_pycocotools_stats(gt, pred)[1], abs=1e-2)


def test_coco_metrics_match_pycocotools() -> None:
    pytest.importorskip("pycocotools")
    gt, pred = _well_separated_case(seed=1)
    ours = coco_metrics(gt, pred)
    ref = _pycocotools_stats(gt, pred)
    for key, i in {"AP": 0, "AP50": 1, "AP75": 2, "AP_medium": 4, "AP_large": 5, "AR100": 8}.items():
        assert ours[key] == pytest.approx(ref[i], abs=1e-6), key
    assert np.isnan(ours["AP_small"])  # no small face: COCO's -1 becomes NaN


# ---------------------------------------------------------------- COCO metrics


def test_coco_metrics_perfect_and_unknown_image_size() -> None:
    gt = {"a": rec("a", [FACE_A, [300, 300, 320, 330]])}
    pred = {"a": rec("a", [FACE_A, [300, 300, 320, 330]], [0.9, 0.8]), "other": rec("other", [FACE_A], [1.0])}
    m = coco_metrics(gt, pred)
    assert set(m) == {"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR100"}
    for key in ("AP", "AP50", "AP75", "AP_small", "AP_large", "AR100"):
        assert m[key] == pytest.approx(1.0), key
    assert np.isnan(m["AP_medium"])


def test_build_coco_dicts() -> None:
    gt = {"a": rec("a", [[10, 20, 50, 80]]), "b": rec("b", [FACE_A], width=640, height=480)}
    pred = {"a": rec("a", [[0, 0, 120.5, 30]], [0.5]), "zzz": rec("zzz", [FACE_A], [0.9])}
    dataset, results = build_coco_dicts(gt, pred)
    assert [(im["file_name"], im["width"], im["height"]) for im in dataset["images"]] == [
        ("a", 121, 80), ("b", 640, 480)]
    assert dataset["annotations"][0]["bbox"] == [10, 20, 40, 60]
    assert dataset["annotations"][0]["area"] == 2400
    assert results == [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 120.5, 30], "score": 0.5}]


def test_coco_caps_detections_at_100_per_image() -> None:
    gt = {"a": rec("a", [FACE_A])}
    fps = [[1000 + 30 * i, 0, 1020 + 30 * i, 20] for i in range(100)]
    scores = list(np.linspace(0.99, 0.5, 100))
    # TP ranked 101st: dropped by COCO's 100-detection cap (the official protocol keeps it).
    pred = {"a": rec("a", [*fps, FACE_A], [*scores, 0.1])}
    assert coco_metrics(gt, pred)["AP50"] == 0.0
    assert evaluate_official(gt, pred).tp == 1
    pred99 = {"a": rec("a", [*fps[:99], FACE_A], [*scores[:99], 0.1])}
    assert coco_metrics(gt, pred99)["AP50"] > 0.0


# ---------------------------------------------------------------- plots and reports


def _result(ap: float = 0.75) -> OfficialResult:
    return OfficialResult(ap=ap, precision=np.array([1.0, 0.5, 2 / 3]), recall=np.array([0.5, 0.5, 1.0]),
                          scores=np.array([0.9, 0.8, 0.7]), num_gt=2, num_det=3, tp=2, fp=1)


def test_pr_curve_figure_legend_has_ap() -> None:
    fig = pr_curve_figure({"model-a": _result(0.8731), "model-b": _result(float("nan"))})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["model-a (AP50 87.31)", "model-b (AP50 n/a)"]
    single = pr_curve_figure(_result(1.0))
    assert [t.get_text() for t in single.axes[0].get_legend().get_texts()] == ["detector (AP50 100.00)"]


def test_plot_pr_curve_writes_png_atomically(tmp_path) -> None:
    out = plot_pr_curve(_result(), tmp_path / "sub" / "pr.png")
    assert out == tmp_path / "sub" / "pr.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["pr.png"]  # no temp file left
    with pytest.raises(ValueError):
        plot_pr_curve({}, tmp_path / "none.png")


def test_format_report_and_json() -> None:
    res = _result(0.8731)
    lines = format_report(res, {"all": res, "small": _result(float("nan"))}, {"AP": 0.5, "AP50": 0.9})
    assert lines[0] == "AP50 87.31%"  # issue 38 A15: percentages say so
    assert lines[1].startswith("recall ") and "%" in lines[1].split()[1]
    assert lines[2].startswith("COCO AP 50.00%  AP50 90.00%")
    assert "AP50 %" in lines[3] and "recall %" in lines[3]
    assert lines[-1].split()[-2:] == ["n/a", "100.00"]
    assert pct(float("nan")) == "n/a" and pct(1.0) == "100.00"
    data = report_dict(res, {"small": _result(float("nan"))}, {"AP": float("nan")}, pred="p.csv")
    text = json.dumps(data, allow_nan=False)  # NaN became null
    assert json.loads(text)["breakdown"]["small"]["ap"] is None
    assert data["ap50"] == pytest.approx(0.8731) and data["pred"] == "p.csv"
