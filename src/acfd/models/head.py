"""The anchor head: classification and box-regression subnets shared across all pyramid levels.

As in RetinaNet, each subnet is ``num_convs`` 3x3 conv + ReLU layers then a 3x3 predictor; with one
anchor per location (paper 4.1) the classifier predicts 1 logit and the regressor 4 deltas per
location. By default the subnets carry no normalisation, so the same weights serve every level (a
BatchNorm shared across levels would mix their statistics) and nothing needs fusing at deploy time.
``HeadConfig.norm = "gn"`` adds GroupNorm after each subnet conv (per image, so it can be shared
across levels, as in FCOS / ATSS): it makes a from-scratch head train much faster with AdamW, at the
cost of one GroupNormalization per conv at inference (it cannot be folded into the conv).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from acfd.config import HeadConfig
from acfd.models.layers import ACBlock


def _subnet(in_chs: int, cfg: HeadConfig) -> nn.Sequential:
    if cfg.norm not in ("none", "gn"):
        raise ValueError(f"head norm must be 'none' or 'gn', got {cfg.norm!r}")
    if cfg.norm == "gn" and cfg.channels % cfg.norm_groups:
        raise ValueError(f"head channels {cfg.channels} are not divisible by norm_groups {cfg.norm_groups}")
    layers: list[nn.Module] = []
    chs = in_chs
    for _ in range(cfg.num_convs):
        if cfg.asymmetric:
            layers.append(ACBlock(chs, cfg.channels, 3))
        elif cfg.norm == "gn":
            layers += [
                nn.Conv2d(chs, cfg.channels, 3, padding=1, bias=False),
                nn.GroupNorm(cfg.norm_groups, cfg.channels),
                nn.ReLU(inplace=True),
            ]
        else:
            layers += [nn.Conv2d(chs, cfg.channels, 3, padding=1), nn.ReLU(inplace=True)]
        chs = cfg.channels
    return nn.Sequential(*layers)


class ACFDHead(nn.Module):
    """Shared classification (1 logit) and regression (4 deltas) subnets.

    ``forward`` maps the pyramid ``[(B, C, H_l, W_l)]`` to ``cls_logits (B, A)`` and
    ``box_deltas (B, A, 4)`` with A = sum of H_l * W_l, level by level, row-major.
    """

    def __init__(self, in_chs: int, cfg: HeadConfig) -> None:
        super().__init__()
        self.cls_subnet = _subnet(in_chs, cfg)
        self.reg_subnet = _subnet(in_chs, cfg)
        last = cfg.channels if cfg.num_convs > 0 else in_chs
        self.cls_logits = nn.Conv2d(last, 1, 3, padding=1)
        self.bbox_pred = nn.Conv2d(last, 4, 3, padding=1)
        self.prior_prob = cfg.prior_prob

    def reset_parameters(self) -> None:
        """RetinaNet init: N(0, 0.01) predictors, classifier bias from the prior probability."""
        for m in (self.cls_logits, self.bbox_pred):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - self.prior_prob) / self.prior_prob))

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        cls_all, reg_all = [], []
        for f in feats:
            n = f.shape[0]
            cls = self.cls_logits(self.cls_subnet(f))  # (B, 1, H, W)
            reg = self.bbox_pred(self.reg_subnet(f))  # (B, 4, H, W)
            cls_all.append(cls.reshape(n, -1))  # (B, HW)
            reg_all.append(reg.permute(0, 2, 3, 1).reshape(n, -1, 4))  # (B, HW, 4)
        return torch.cat(cls_all, dim=1), torch.cat(reg_all, dim=1)
