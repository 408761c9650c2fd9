"""Dynamic Anchor Match (Algorithm 1) on hand-made cases."""

import torch

from acfd.detection.matcher import COMPENSATED, MATCHED, NEGATIVE, dynamic_anchor_match

ANCHORS = torch.tensor(
    [
        [0.0, 0.0, 16.0, 16.0],  # 0
        [8.0, 0.0, 24.0, 16.0],  # 1: shifted half an anchor to the right
        [100.0, 100.0, 116.0, 116.0],  # 2: far away
        [200.0, 200.0, 216.0, 216.0],  # 3: far away
    ]
)


def test_no_faces_all_negative():
    res = dynamic_anchor_match(ANCHORS, ANCHORS.clone(), torch.zeros(0, 4))
    assert (res.labels == NEGATIVE).all() and (res.matched_idxs == -1).all()


def test_face_between_two_anchors_matches_both():
    face = torch.tensor([[4.0, 0.0, 20.0, 16.0]])  # IoU 0.6 with anchors 0 and 1
    res = dynamic_anchor_match(ANCHORS, None, face)
    assert res.labels.tolist() == [MATCHED, MATCHED, NEGATIVE, NEGATIVE]
    assert res.matched_idxs.tolist() == [0, 0, -1, -1]


def test_face_matched_only_through_regressed_box():
    face = torch.tensor([[300.0, 300.0, 340.0, 310.0]])  # extreme aspect, no anchor overlaps it
    regressed = ANCHORS.clone()
    regressed[3] = torch.tensor([301.0, 300.0, 340.0, 310.0])  # IoU 0.975 > T2
    regressed[2] = torch.tensor([300.0, 300.0, 320.0, 310.0])  # IoU 0.5 < T2
    res = dynamic_anchor_match(ANCHORS, regressed, face, 0.35, 0.7)
    assert res.labels.tolist() == [NEGATIVE, NEGATIVE, NEGATIVE, COMPENSATED]
    assert res.matched_idxs.tolist() == [-1, -1, -1, 0]
    # classic matching (no regressed boxes) leaves that face unmatched
    assert (dynamic_anchor_match(ANCHORS, None, face).labels == NEGATIVE).all()


def test_first_step_wins_and_thresholds_are_inclusive_exclusive():
    faces = torch.tensor([[0.0, 0.0, 16.0, 16.0], [100.0, 100.0, 116.0, 116.0]])
    regressed = ANCHORS.clone()
    regressed[0] = faces[1]  # anchor 0 is matched in step 1 anyway: stays MATCHED to face 0
    res = dynamic_anchor_match(ANCHORS, regressed, faces)
    assert res.labels[0] == MATCHED and res.matched_idxs[0] == 0
    assert res.labels[2] == MATCHED and res.matched_idxs[2] == 1
    # IoU exactly T1 counts (>=)
    face = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    anchor = torch.tensor([[0.0, 0.0, 16.0, 16.0 * 0.35]])
    assert dynamic_anchor_match(anchor, None, face, iou_threshold=0.35).labels.item() == MATCHED


def test_vectorised_many_anchors_many_faces():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(5000, 2, generator=g) * 500
    anchors = torch.cat([xy, xy + 32], 1)
    fxy = torch.rand(7, 2, generator=g) * 500
    faces = torch.cat([fxy, fxy + 40], 1)
    res = dynamic_anchor_match(anchors, anchors + 1, faces)
    assert res.labels.shape == (5000,)
    assert ((res.labels > 0) == (res.matched_idxs >= 0)).all()
