import pytest
import torch

from acfd.config import LossConfig, MatchConfig
from acfd.detection.box_coder import BoxCoder
from acfd.detection.losses import ACFDLoss, margin_focal_loss


def test_margin_raises_positive_loss_and_leaves_negatives():
    logits = torch.linspace(-4, 4, 9)
    pos = torch.ones(9)
    neg = torch.zeros(9)
    assert (margin_focal_loss(logits, pos, margin=0.2) > margin_focal_loss(logits, pos, margin=0.0)).all()
    assert torch.equal(margin_focal_loss(logits, neg, margin=0.2), margin_focal_loss(logits, neg, margin=0.0))


def test_focal_matches_hand_computed_value():
    # p = sigmoid(0) = 0.5, positive, no margin: alpha * (1-p)^2 * -log(p)
    value = margin_focal_loss(torch.zeros(1), torch.ones(1), margin=0.0, alpha=0.25, gamma=2.0)
    expected = 0.25 * 0.25 * torch.log(torch.tensor(2.0))
    assert torch.allclose(value, expected.reshape(1))


def _setup():
    anchors = torch.tensor(
        [[0.0, 0.0, 16.0, 16.0], [8.0, 0.0, 24.0, 16.0], [100.0, 100.0, 116.0, 116.0], [300.0, 300.0, 316.0, 316.0]]
    )
    coder = BoxCoder()
    return anchors, coder


def test_acfd_loss_separate_normalisation_and_gradients():
    anchors, coder = _setup()
    face = torch.tensor([[4.0, 0.0, 20.0, 16.0]])  # anchors 0, 1 matched
    far = torch.tensor([[300.0, 300.0, 340.0, 310.0]])
    deltas = torch.zeros(1, 4, 4)
    # make anchor 3's regressed box hit the far face -> compensated
    deltas[0, 3] = coder.encode(far[0], anchors[3])
    deltas.requires_grad_(True)
    logits = torch.zeros(1, 4, requires_grad=True)
    loss_fn = ACFDLoss(LossConfig(), MatchConfig(), coder)
    out = loss_fn(logits, deltas, anchors, [torch.cat([face, far])])
    assert out["num_matched"].item() == 2 and out["num_compensated"].item() == 1
    out["loss"].backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(deltas.grad).all()
    # lambda_cls scales only the compensated anchor's classification term
    cfg0 = LossConfig(lambda_cls=0.0, lambda_reg=0.0)
    out0 = ACFDLoss(cfg0, MatchConfig(), coder)(logits, deltas, anchors, [torch.cat([face, far])])
    focal = margin_focal_loss(logits.detach()[0], torch.tensor([1.0, 1.0, 0.0, 1.0]), 0.2)
    assert torch.allclose(out0["loss_cls"], focal[:3].sum() / 2)
    assert torch.allclose(out["loss_cls"], focal[:3].sum() / 2 + 0.7 * focal[3])


def test_acfd_loss_empty_image_and_classic_match():
    anchors, coder = _setup()
    logits = torch.randn(2, 4, requires_grad=True)
    deltas = torch.randn(2, 4, 4, requires_grad=True)
    out = ACFDLoss(LossConfig(), MatchConfig(dynamic=False), coder)(
        logits, deltas, anchors, [torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 16.0, 16.0]])]
    )
    assert out["num_compensated"].item() == 0 and out["num_matched"].item() == 1
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(deltas.grad).all()
    with pytest.raises(ValueError):
        ACFDLoss(LossConfig(), MatchConfig(), coder)(logits, deltas, anchors, [torch.zeros(0, 4)])
