"""Deploy-time re-parameterisation (paper 4.3, Fig. 5 and eq. 4).

Every :class:`~acfd.models.layers.ACBlock` becomes one 3x3 conv and every conv+BN pair one conv.
For the timm baselines, conv+BN pairs inside timm modules are folded with
``torch.fx.experimental.optimization.fuse`` where the module traces; otherwise they are left as is.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse as fx_fuse

logger = logging.getLogger(__name__)


def fuse_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``model`` with all re-parameterisable blocks switched to their deploy form.

    Args:
        model: any module containing blocks with a ``switch_to_deploy()`` method.
        inplace: modify ``model`` itself instead of a deep copy.

    Returns:
        The fused model, in eval mode (fusion uses the BN running statistics).
    """
    fused = model if inplace else copy.deepcopy(model)
    fused.eval()
    for module in list(fused.modules()):
        if hasattr(module, "switch_to_deploy"):
            module.switch_to_deploy()
    backbone = getattr(fused, "backbone", None)
    body = getattr(backbone, "body", None)
    if body is not None and any(isinstance(m, nn.BatchNorm2d) for m in body.modules()):
        try:
            backbone.body = fx_fuse(body)
        except Exception as exc:  # timm modules that do not trace keep their BN
            logger.info("could not fold BN inside %s: %s", type(body).__name__, exc)
    return fused


def count_batchnorm(model: nn.Module) -> int:
    """Number of BatchNorm layers left in ``model``."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def count_asymmetric_convs(model: nn.Module) -> int:
    """Number of 1xK / Kx1 (K > 1) convolutions left in ``model``."""
    n = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            if kh != kw:
                n += 1
    return n


@torch.no_grad()
def max_output_difference(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    """Largest absolute difference between two models' outputs (tuples flattened)."""
    out_a, out_b = a(x), b(x)
    if isinstance(out_a, torch.Tensor):
        out_a, out_b = (out_a,), (out_b,)
    return max(float((p - q).abs().max()) for p, q in zip(out_a, out_b))
