import math

import pytest
import torch

from acfd.detection.anchors import AnchorGenerator
from acfd.detection.box_coder import BoxCoder


def test_anchor_count_and_sizes_at_640():
    gen = AnchorGenerator()
    anchors = gen(640, 640)
    assert anchors.shape == (34125, 4)
    assert gen.sizes == (16, 32, 64, 128, 256, 512)
    counts = [160 * 160, 80 * 80, 40 * 40, 20 * 20, 10 * 10, 5 * 5]
    start = 0
    for n, size, stride in zip(counts, gen.sizes, gen.strides):
        level = anchors[start : start + n]
        w = level[:, 2] - level[:, 0]
        h = level[:, 3] - level[:, 1]
        assert torch.allclose(w, torch.full_like(w, size)) and torch.allclose(h, w)
        # first anchor centred at (stride / 2, stride / 2), row-major order
        cx = (level[0, 0] + level[0, 2]) / 2
        assert cx == stride / 2
        assert (level[1, 0] - level[0, 0]) == stride
        start += n


def test_anchor_hand_computed_small_grid():
    gen = AnchorGenerator(strides=(4,), scale=4.0)
    anchors = gen(8, 4)  # 2 rows x 1 column
    expected = torch.tensor([[-6.0, -6.0, 10.0, 10.0], [-6.0, -2.0, 10.0, 14.0]])
    assert torch.equal(anchors, expected)
    with pytest.raises(ValueError, match="strides"):
        gen.grid_anchors([(2, 1), (1, 1)])


def test_box_coder_round_trip_and_identity():
    coder = BoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 16.0, 16.0], [10.0, 20.0, 74.0, 84.0]])
    boxes = torch.tensor([[2.0, 3.0, 15.0, 20.0], [0.0, 0.0, 100.0, 50.0]])
    deltas = coder.encode(boxes, anchors)
    assert torch.allclose(coder.decode(deltas, anchors), boxes, atol=1e-4)
    assert torch.allclose(coder.encode(anchors, anchors), torch.zeros(2, 4), atol=1e-6)
    # huge deltas are clamped before exp: no inf
    out = coder.decode(torch.full((1, 4), 1e4), anchors[:1])
    assert torch.isfinite(out).all()
    assert math.isclose(float(out[0, 2] - out[0, 0]), 16 * 1000 / 16, rel_tol=1e-4)
