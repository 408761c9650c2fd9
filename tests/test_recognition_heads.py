"""Margin heads: the target logit follows each paper's formula, other classes get no margin,
gradients stay finite at cos = +/-1."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from acfd.recognition.heads import HEADS, ArcFaceHead, CosFaceHead, SoftmaxHead, SphereFaceHead, create_head


def _setup(head: torch.nn.Module, n: int = 5, d: int = 8, seed: int = 0):
    torch.manual_seed(seed)
    x = torch.randn(n, d) * 3
    labels = torch.arange(n) % head.weight.shape[0] if hasattr(head, "weight") else torch.arange(n) % 3
    return x, labels


def _cos(head, x):
    return F.normalize(x, dim=1) @ F.normalize(head.weight, dim=1).T


def test_cosface_target_logit() -> None:
    head = CosFaceHead(8, 4, scale=30.0, margin=0.35)
    x, y = _setup(head)
    cos = _cos(head, x)
    out = head(x, y)
    target = out.gather(1, y.view(-1, 1)).squeeze(1)
    torch.testing.assert_close(target, 30.0 * (cos.gather(1, y.view(-1, 1)).squeeze(1) - 0.35))
    mask = F.one_hot(y, 4).bool()
    torch.testing.assert_close(out[~mask], 30.0 * cos[~mask])
    torch.testing.assert_close(head(x), 30.0 * cos)  # no labels: no margin


def test_arcface_target_logit() -> None:
    head = ArcFaceHead(8, 4, scale=16.0, margin=0.5)
    x, y = _setup(head)
    cos = _cos(head, x)
    theta = torch.acos(cos.gather(1, y.view(-1, 1)).squeeze(1))
    assert (theta + 0.5 < math.pi).all()
    out = head(x, y)
    torch.testing.assert_close(out.gather(1, y.view(-1, 1)).squeeze(1), 16.0 * torch.cos(theta + 0.5), atol=1e-4, rtol=1e-4)
    mask = F.one_hot(y, 4).bool()
    torch.testing.assert_close(out[~mask], 16.0 * cos[~mask])


def test_arcface_is_monotone_past_pi() -> None:
    head = ArcFaceHead(2, 1, scale=1.0, margin=0.5)
    cos = torch.linspace(-1, 1, 201)
    values = head.target_logit(cos, torch.zeros(201, 2))
    assert (values[1:] >= values[:-1] - 1e-6).all()  # target logit never rises as theta grows


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_sphereface_psi_matches_formula(m: int) -> None:
    head = SphereFaceHead(8, 4, margin=m, lambda_base=0.0, lambda_min=0.0)
    theta = torch.linspace(0.01, math.pi - 0.01, 50, dtype=torch.float64)
    k = torch.floor(m * theta / math.pi)
    expected = (-1.0) ** k * torch.cos(m * theta) - 2 * k
    torch.testing.assert_close(head.psi(torch.cos(theta)), expected, atol=1e-6, rtol=1e-6)
    assert (head.psi(torch.cos(theta))[1:] <= head.psi(torch.cos(theta))[:-1] + 1e-9).all()  # monotone


def test_sphereface_target_logit_and_no_margin_elsewhere() -> None:
    head = SphereFaceHead(8, 4, margin=4, lambda_base=0.0, lambda_min=0.0)
    x, y = _setup(head)
    cos = _cos(head, x)
    norm = x.norm(dim=1)
    out = head(x, y)
    target_cos = cos.gather(1, y.view(-1, 1)).squeeze(1)
    torch.testing.assert_close(out.gather(1, y.view(-1, 1)).squeeze(1), norm * head.psi(target_cos), atol=1e-4, rtol=1e-4)
    mask = F.one_hot(y, 4).bool()
    torch.testing.assert_close(out[~mask], (norm.view(-1, 1) * cos)[~mask], atol=1e-5, rtol=1e-5)


def test_sphereface_lambda_anneals_in_training_only() -> None:
    head = SphereFaceHead(8, 4, lambda_base=1000.0, lambda_min=5.0)
    x, y = _setup(head)
    head.eval()
    head(x, y)
    assert head.lam == 1000.0
    head.train()
    for _ in range(10):
        head(x, y)
    assert head.lam == pytest.approx(1000.0 / (1 + 0.12 * 10))
    head.iteration.fill_(10**6)
    assert head.lam == 5.0


def test_softmax_head_is_linear() -> None:
    head = SoftmaxHead(8, 3)
    x, y = _setup(head)
    torch.testing.assert_close(head(x, y), head.fc(x))


@pytest.mark.parametrize("name", sorted(HEADS))
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_gradients_finite_at_cos_edges(name: str, sign: float) -> None:
    head = create_head(name, 4, 3)
    w = head.weight if hasattr(head, "weight") else head.fc.weight
    x = (sign * w[0].detach().clone() * 2.0).unsqueeze(0).repeat(2, 1).requires_grad_(True)  # cos = +/-1 to class 0
    out = head(x, torch.zeros(2, dtype=torch.long))
    F.cross_entropy(out, torch.zeros(2, dtype=torch.long)).backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)


def test_unknown_head_name() -> None:
    with pytest.raises(ValueError, match="unknown head 'foo'"):
        create_head("foo", 4, 2)
