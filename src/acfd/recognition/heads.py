"""Classification heads used only in training (arXiv table 1 and eqs. 1-6).

Each head maps embeddings ``(N, D)`` and labels ``(N,)`` to logits ``(N, C)`` for a plain
cross-entropy; the margin is applied to the target class only. Without labels (inference, or the
unknown identity rejection loss of MM'20 eq. 2) no margin is applied.

- SoftMax: ``W x + b``.
- SphereFace (A-Softmax): target ``||x|| psi(theta)``, ``psi = (-1)^k cos(m theta) - 2k``,
  ``theta in [k pi / m, (k+1) pi / m]``; others ``||x|| cos(theta_j)`` (eqs. 1-2). As in the
  SphereFace paper, training blends ``(lambda cos + psi) / (1 + lambda)`` with an annealed lambda
  (it does not converge otherwise); ``lambda = 0`` is the exact formula.
- CosFace: target ``s (cos(theta) - m)``, others ``s cos(theta_j)`` (eq. 3).
- ArcFace: target ``s cos(theta + m)``, others ``s cos(theta_j)`` (eq. 5); where
  ``theta + m > pi`` the usual monotone extension ``cos(theta) - m sin(m)`` keeps the target logit
  decreasing in theta (as the ArcFace reference code does).

Hand-written because they are the papers' subject and timm has none of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-7


class _NormalizedHead(nn.Module):
    """Shared part of the angular heads: class weights, cosines of the normalised vectors."""

    def __init__(self, embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        """``cos(theta_j)`` ``(N, C)`` between the embeddings and the class weights, clamped to [-1, 1]."""
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1)).clamp(-1.0, 1.0)

    def target_logit(self, cos: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The margin-modified target logit for target cosines ``cos`` ``(N,)``."""
        raise NotImplementedError

    def plain_logits(self, cos: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(N, C)``; with ``labels`` the target column carries the margin."""
        cos = self.cosine(x)
        logits = self.plain_logits(cos, x)
        if labels is None:
            return logits
        index = labels.view(-1, 1).long()
        target = self.target_logit(cos.gather(1, index).squeeze(1), x)
        return logits.scatter(1, index, target.unsqueeze(1).to(logits.dtype))


class SoftmaxHead(nn.Module):
    """Plain fully connected classifier (decision boundary ``(W1 - W2) x + b1 - b2 = 0``)."""

    def __init__(self, embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(embedding_dim, num_classes)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(x)


class CosFaceHead(_NormalizedHead):
    """CosFace / LMCL (Wang et al. 2018): ``s (cos(theta_y) - m)`` for the target class."""

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 64.0, margin: float = 0.35) -> None:
        super().__init__(embedding_dim, num_classes)
        self.scale, self.margin = scale, margin

    def plain_logits(self, cos: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.scale * cos

    def target_logit(self, cos: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (cos - self.margin)


class ArcFaceHead(_NormalizedHead):
    """ArcFace (Deng et al. 2019): ``s cos(theta_y + m)`` for the target class."""

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 64.0, margin: float = 0.5) -> None:
        super().__init__(embedding_dim, num_classes)
        self.scale, self.margin = scale, margin
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.threshold = math.cos(math.pi - margin)  # theta + m = pi
        self.fallback = math.sin(math.pi - margin) * margin

    def plain_logits(self, cos: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.scale * cos

    def target_logit(self, cos: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # sin(theta) via sqrt(1 - cos^2), clamped away from 0 so the gradient stays finite at |cos| = 1
        sin = torch.sqrt((1.0 - cos * cos).clamp_min(_EPS))
        phi = cos * self.cos_m - sin * self.sin_m  # cos(theta + m)
        return self.scale * torch.where(cos > self.threshold, phi, cos - self.fallback)


def _cos_m_theta(cos: torch.Tensor, m: int) -> torch.Tensor:
    """``cos(m theta)`` as the Chebyshev polynomial ``T_m(cos theta)`` (exact, smooth at the edges)."""
    t_prev, t = torch.ones_like(cos), cos
    if m == 0:
        return t_prev
    for _ in range(m - 1):
        t_prev, t = t, 2 * cos * t - t_prev
    return t


class SphereFaceHead(_NormalizedHead):
    """SphereFace / A-Softmax (Liu et al. 2017), eqs. 1-2 of the arXiv paper.

    Logits are ``||x|| cos(theta_j)`` (weights normalised, no bias), the target ``||x|| psi(theta)``.

    Args:
        margin: the integer ``m >= 1``.
        lambda_base, lambda_gamma, lambda_power, lambda_min: the annealing of SphereFace's released
            code, ``lambda = max(lambda_min, base * (1 + gamma * iteration) ** -power)``, counted per
            training-mode forward; ``lambda_base = lambda_min = 0`` gives the exact ``psi``.
    """

    def __init__(
        self, embedding_dim: int, num_classes: int, margin: int = 4, lambda_base: float = 1000.0,
        lambda_gamma: float = 0.12, lambda_power: float = 1.0, lambda_min: float = 5.0,
    ) -> None:
        super().__init__(embedding_dim, num_classes)
        if int(margin) != margin or margin < 1:
            raise ValueError(f"SphereFace margin m must be an integer >= 1, got {margin}")
        self.margin = int(margin)
        self.lambda_base, self.lambda_gamma = lambda_base, lambda_gamma
        self.lambda_power, self.lambda_min = lambda_power, lambda_min
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    @property
    def lam(self) -> float:
        value = self.lambda_base * (1.0 + self.lambda_gamma * float(self.iteration)) ** (-self.lambda_power)
        return max(self.lambda_min, value)

    def psi(self, cos: torch.Tensor) -> torch.Tensor:
        """``psi(theta) = (-1)^k cos(m theta) - 2k`` with ``k = floor(m theta / pi)``."""
        with torch.no_grad():  # k is piecewise constant
            theta = torch.acos(cos.clamp(-1.0 + _EPS, 1.0 - _EPS))
            k = torch.floor(self.margin * theta / math.pi).clamp(0, self.margin - 1)
        sign = 1.0 - 2.0 * torch.remainder(k, 2)
        return sign * _cos_m_theta(cos, self.margin) - 2.0 * k

    def plain_logits(self, cos: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x.norm(dim=1, keepdim=True) * cos

    def target_logit(self, cos: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        lam = self.lam
        if self.training:
            self.iteration += 1
        return x.norm(dim=1) * (lam * cos + self.psi(cos)) / (1.0 + lam)


#: Head names -> constructors ``(embedding_dim, num_classes, **kwargs)``.
HEADS: dict[str, Callable[..., nn.Module]] = {
    "softmax": SoftmaxHead,
    "sphereface": SphereFaceHead,
    "cosface": CosFaceHead,
    "arcface": ArcFaceHead,
}


def create_head(name: str, embedding_dim: int, num_classes: int, **kwargs: float) -> nn.Module:
    """Build a head by name (see :data:`HEADS`)."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r} (known: {', '.join(sorted(HEADS))})")
    return HEADS[name](embedding_dim, num_classes, **kwargs)
