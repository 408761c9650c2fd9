"""Baseline backbones of the paper's Table 2, from timm (``pretrained=False``, ``features_only``).

Paper 4.2: "two extra convolution layers with stride 2 followed by batch normalization and ReLU
activation are added to these backbones for generating 6-level features with stride from 4 to 128".
"""

from __future__ import annotations

import torch
from torch import nn

from acfd.config import BackboneConfig
from acfd.models.layers import ConvBnAct
from acfd.models.vovnet import VoVNet

# Table 2 names -> timm model names.
TIMM_BASELINES: dict[str, str] = {
    "resnet50": "resnet50",
    "seresnet50": "seresnet50",
    "res2net50": "res2net50_26w_4s",
    "resnest50": "resnest50d",
    "efficientnet_b3": "efficientnet_b3",
    "vovnet39": "ese_vovnet39b",
}


class TimmBackbone(nn.Module):
    """A timm feature extractor at strides 4-32 plus two stride-2 conv-BN-ReLU layers (64, 128)."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        import timm  # imported lazily: only the baselines need it

        timm_name = TIMM_BASELINES.get(cfg.name, cfg.name)
        self.body = timm.create_model(
            timm_name, pretrained=False, features_only=True, out_indices=(1, 2, 3, 4)
        )
        reductions = list(self.body.feature_info.reduction())
        if reductions != [4, 8, 16, 32]:
            raise ValueError(
                f"timm model {timm_name!r} gives strides {reductions}, expected [4, 8, 16, 32]"
            )
        chs = list(self.body.feature_info.channels())
        if len(cfg.extra_chs) != 2:
            raise ValueError(f"extra_chs needs 2 entries, got {cfg.extra_chs}")
        e1, e2 = cfg.extra_chs
        self.extra = nn.ModuleList([ConvBnAct(chs[-1], e1, 3, 2), ConvBnAct(e1, e2, 3, 2)])
        self.feature_info = [
            {"num_chs": c, "reduction": r, "module": f"body.{i}"}
            for i, (c, r) in enumerate(zip(chs, reductions))
        ] + [
            {"num_chs": e1, "reduction": 64, "module": "extra.0"},
            {"num_chs": e2, "reduction": 128, "module": "extra.1"},
        ]

    @property
    def out_channels(self) -> list[int]:
        return [int(info["num_chs"]) for info in self.feature_info]

    @property
    def strides(self) -> list[int]:
        return [int(info["reduction"]) for info in self.feature_info]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = list(self.body(x))
        y = feats[-1]
        for layer in self.extra:
            y = layer(y)
            feats.append(y)
        return feats


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    """VoVNet family for ``name == "vovnet"``, otherwise a timm baseline."""
    if cfg.name == "vovnet":
        return VoVNet(cfg)
    return TimmBackbone(cfg)
