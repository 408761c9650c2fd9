"""VoVNetV3 (paper section 3.2, Table 1) and VoVNetV2, built from (asymmetric) one-shot aggregation.

An AOSA module (paper Fig. 2) is the OSA module of VoVNetV2 -- ``layer_per_block`` sequential 3x3
convs whose outputs are concatenated once with the input, a 1x1 aggregation conv, eSE channel
attention and an identity residual when the shapes allow -- with every 3x3 conv an ACB. With
``asymmetric=False`` the same code builds VoVNetV2.

The paper does not give the number of layers per module: we use 5, as VoVNetV2-39/57 do. eSE is
applied in every module, as in the original VoVNetV2 (CenterMask); timm applies it only to the last
module of a stage.
"""

from __future__ import annotations

import torch
from torch import nn

from acfd.config import BackboneConfig
from acfd.models.layers import ConvBnAct, conv3x3_block, create_attn


class OsaBlock(nn.Module):
    """One (A)OSA module.

    Args:
        in_chs: input channels.
        mid_chs: channels of each 3x3 conv (the first number of Table 1's ``-/-``).
        out_chs: channels after the 1x1 aggregation (the second number).
        layer_per_block: number of sequential 3x3 convs.
        residual: add the input when ``in_chs == out_chs``.
        asymmetric: use ACBs for the 3x3 convs (AOSA).
        attn: channel attention name (``"ese"`` or ``None``).
    """

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        layer_per_block: int,
        residual: bool = True,
        asymmetric: bool = True,
        attn: str | None = "ese",
    ) -> None:
        super().__init__()
        self.residual = residual and in_chs == out_chs
        layers = []
        next_in = in_chs
        for _ in range(layer_per_block):
            layers.append(conv3x3_block(next_in, mid_chs, asymmetric=asymmetric))
            next_in = mid_chs
        self.layers = nn.ModuleList(layers)
        concat_chs = in_chs + layer_per_block * mid_chs
        self.conv_concat = ConvBnAct(concat_chs, out_chs, kernel_size=1)
        self.attn = create_attn(attn, out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        out = x
        for layer in self.layers:
            out = layer(out)
            outputs.append(out)
        out = self.conv_concat(torch.cat(outputs, dim=1))
        if self.attn is not None:
            out = self.attn(out)
        if self.residual:
            out = out + x
        return out


class OsaStage(nn.Module):
    """Optional 3x3/2 max-pool (ceil mode) followed by ``block_per_stage`` OSA modules."""

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        block_per_stage: int,
        layer_per_block: int,
        downsample: bool,
        residual: bool,
        asymmetric: bool,
        attn: str | None,
    ) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True) if downsample else None
        blocks = []
        for i in range(block_per_stage):
            blocks.append(
                OsaBlock(
                    in_chs if i == 0 else out_chs,
                    mid_chs,
                    out_chs,
                    layer_per_block,
                    residual=residual,
                    asymmetric=asymmetric,
                    attn=attn,
                )
            )
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = self.pool(x)
        return self.blocks(x)


class VoVNet(nn.Module):
    """VoVNetV3 (``asymmetric=True``) / VoVNetV2 backbone with one output per stage.

    Stem: conv1 (3x3/2), conv2 (3x3/1), conv3 (3x3/2) -> stride 4; stage 1 keeps stride 4 and every
    later stage starts with a 3x3/2 max-pool, so six stages give strides 4, 8, 16, 32, 64, 128
    (paper Table 1). ``feature_info`` lists ``num_chs``/``reduction``/``module`` per output.
    """

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        n = len(cfg.stage_out_chs)
        if not (len(cfg.stage_conv_chs) == len(cfg.block_per_stage) == n):
            raise ValueError(
                "stage_conv_chs, stage_out_chs and block_per_stage need one entry per stage, got "
                f"{len(cfg.stage_conv_chs)}, {n} and {len(cfg.block_per_stage)}"
            )
        if len(cfg.stem_chs) != 3:
            raise ValueError(f"stem_chs needs 3 entries (conv1, conv2, conv3), got {cfg.stem_chs}")
        c1, c2, c3 = cfg.stem_chs
        self.stem = nn.Sequential(
            ConvBnAct(3, c1, 3, stride=2),
            ConvBnAct(c1, c2, 3, stride=1),
            ConvBnAct(c2, c3, 3, stride=2),
        )
        self.feature_info: list[dict[str, int | str]] = []
        stages = []
        in_chs, reduction = c3, 4
        for i in range(n):
            downsample = i > 0
            if downsample:
                reduction *= 2
            stages.append(
                OsaStage(
                    in_chs,
                    cfg.stage_conv_chs[i],
                    cfg.stage_out_chs[i],
                    cfg.block_per_stage[i],
                    cfg.layer_per_block,
                    downsample=downsample,
                    residual=cfg.residual,
                    asymmetric=cfg.asymmetric,
                    attn=cfg.attn,
                )
            )
            in_chs = cfg.stage_out_chs[i]
            self.feature_info.append(
                {"num_chs": in_chs, "reduction": reduction, "module": f"stages.{i}"}
            )
        self.stages = nn.ModuleList(stages)

    @property
    def out_channels(self) -> list[int]:
        return [int(info["num_chs"]) for info in self.feature_info]

    @property
    def strides(self) -> list[int]:
        return [int(info["reduction"]) for info in self.feature_info]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stage outputs, shallowest first: ``[(B, C_i, H / s_i, W / s_i)]``."""
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)
