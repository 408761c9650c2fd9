"""TIDE-style error analysis on top of the official protocol: hand-computable cases."""

from __future__ import annotations

import numpy as np
import pytest

from acfd.data.formats import ImageRecord
from acfd.evaluation.errors import ERROR_KINDS, evaluate_errors
from acfd.evaluation.icartoonface import evaluate_official
from acfd.evaluation.report import format_report, report_dict

FACE_A = [0, 0, 99, 99]
FACE_B = [200, 0, 299, 99]
LOOSE_A = [0, 0, 99, 299]  # IoU 1/3 with FACE_A: a localisation error
FAR = [500, 500, 599, 599]  # overlaps no face: a background error


def rec(name: str, boxes: list, scores: list | None = None) -> ImageRecord:
    return ImageRecord(name, np.asarray(boxes, np.float32).reshape(-1, 4),
                       None if scores is None else np.asarray(scores, np.float32))


def _two_faces(boxes: list, scores: list):
    return evaluate_errors({"a": rec("a", [FACE_A, FACE_B])}, {"a": rec("a", boxes, scores)})


def test_localisation_error_fixed_becomes_a_hit() -> None:
    out = _two_faces([LOOSE_A, FACE_B], [0.9, 0.8])
    # official: FP then TP -> precision 0, 1/2 at recall 0, 1/2 -> AP 0.25
    assert out.ap == pytest.approx(0.25)
    assert out.counts == {"localisation": 1, "duplicate": 0, "background": 0, "missed": 0}
    assert out.fixed_ap["localisation"] == pytest.approx(1.0)
    assert out.gain("localisation") == pytest.approx(0.75)
    assert out.fixed_ap["background"] == pytest.approx(0.25) and out.fixed_ap["duplicate"] == pytest.approx(0.25)


def test_second_localisation_error_on_a_face_is_removed_not_counted_twice() -> None:
    out = _two_faces([LOOSE_A, [0, 0, 99, 250], FACE_B], [0.9, 0.85, 0.8])
    assert out.counts["localisation"] == 2
    # fixed: TP (0.9), removed, TP (0.8) -> AP 1; counting both as hits would exceed recall 1
    assert out.fixed_ap["localisation"] == pytest.approx(1.0)
    # a localisation error on a face a TP already took is removed as well
    taken = _two_faces([FACE_A, LOOSE_A, FACE_B], [0.9, 0.85, 0.8])
    assert taken.fixed_ap["localisation"] == pytest.approx(1.0)


def test_duplicate_and_background_errors_removed() -> None:
    dup = _two_faces([FACE_A, FACE_A, FACE_B], [0.9, 0.8, 0.7])
    # official: TP, FP, TP -> AP 0.5 + 0.5 * 2/3
    assert dup.ap == pytest.approx(0.5 + 1 / 3)
    assert dup.counts["duplicate"] == 1 and dup.fixed_ap["duplicate"] == pytest.approx(1.0)
    bkg = _two_faces([FAR, FACE_A, FACE_B], [0.95, 0.9, 0.8])
    assert bkg.counts["background"] == 1
    assert bkg.ap == pytest.approx(2 / 3)  # precision 0, 1/2, 2/3: the envelope is 2/3 throughout
    assert bkg.fixed_ap["background"] == pytest.approx(1.0)


def test_missed_faces_leave_the_face_count() -> None:
    out = _two_faces([FACE_A], [0.9])
    assert out.counts["missed"] == 1 and out.ap == pytest.approx(0.5)
    assert out.fixed_ap["missed"] == pytest.approx(1.0)
    # a face touched only by a bad box is a localisation error, not a miss
    assert _two_faces([FACE_A, [200, 0, 299, 350]], [0.9, 0.5]).counts["missed"] == 0


def test_official_ap_matches_the_protocol_and_images_without_faces_are_ignored() -> None:
    rng = np.random.default_rng(0)
    gt = {f"i{k}": rec(f"i{k}", rng.uniform(0, 200, (3, 2)).repeat(2, 1) + [0, 0, 60, 60]) for k in range(6)}
    pred = {}
    for k in range(6):
        g = gt[f"i{k}"].boxes
        boxes = np.concatenate([g + rng.normal(0, 12, g.shape), rng.uniform(0, 300, (4, 4)).cumsum(1)])
        pred[f"i{k}"] = rec(f"i{k}", boxes.tolist(), rng.uniform(0, 1, len(boxes)).tolist())
    pred["nogt"] = rec("nogt", [FAR], [0.99])
    out = evaluate_errors(gt, pred)
    assert out.ap == pytest.approx(evaluate_official(gt, pred).ap)
    for kind in ERROR_KINDS:
        assert out.fixed_ap[kind] >= out.ap - 1e-12
    assert sum(out.counts[k] for k in ("localisation", "duplicate", "background")) == evaluate_official(gt, pred).fp


def test_no_faces_gives_nan_and_report_shows_the_table() -> None:
    empty = evaluate_errors({}, {"a": rec("a", [FACE_A], [0.9])})
    assert np.isnan(empty.ap) and all(np.isnan(v) for v in empty.fixed_ap.values())
    assert report_dict(evaluate_official({}, {}), errors=empty)["errors"]["missed"]["gain"] is None
    out = _two_faces([LOOSE_A, FACE_B], [0.9, 0.8])
    lines = format_report(evaluate_official({"a": rec("a", [FACE_A, FACE_B])}, {"a": rec("a", [LOOSE_A, FACE_B], [0.9, 0.8])}), errors=out)
    assert lines[-4].split() == ["localisation", "(dets)", "1", "100.00", "+75.00"]
    assert lines[-1].split() == ["missed", "(faces)", "0", "25.00", "+0.00"]
