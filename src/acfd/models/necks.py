"""Feature pyramids: plain FPN, BiFPN (EfficientDet) and ABi-FPN (paper section 3.3).

The BiFPN topology is data (as in efficientdet-pytorch's ``fpn_config``): :func:`bifpn_nodes`
returns the nodes of one cell, each naming the feature indices it fuses; the modules build from it.
Fusion is EfficientDet's fast normalised weighted sum (the slides' formulas)::

    P_i^td  = Conv((w1 * P_i^in + w2 * Resize(P_{i+1}^td)) / (w1 + w2 + eps))
    P_i^out = Conv((w1 * P_i^in + w2 * P_i^td + w3 * Resize(P_{i-1}^out)) / (w1 + w2 + w3 + eps))

ABi-FPN makes every ``Conv`` an ACB (3x3 + 1x3 + 3x1); BiFPN uses plain 3x3 conv-BN-ReLU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from acfd.config import NeckConfig
from acfd.models.layers import ConvBnAct, conv3x3_block


@dataclass(frozen=True)
class FpnNode:
    """One fusion node: output ``level`` computed from the features at ``inputs`` (indices)."""

    level: int
    inputs: tuple[int, ...]


def bifpn_nodes(min_level: int, max_level: int) -> list[FpnNode]:
    """Nodes of one BiFPN cell for levels ``min_level..max_level``.

    Feature indices 0..L-1 are the cell inputs (level order); each node appends one feature.
    Top-down nodes fuse ``P_i^in`` with the node above; bottom-up nodes fuse ``P_i^in``, ``P_i^td``
    and the bottom-up node below (the top level has no ``td`` node, so two inputs there).
    """
    if max_level <= min_level:
        raise ValueError(f"need max_level > min_level, got {min_level}..{max_level}")
    num_levels = max_level - min_level + 1
    nodes: list[FpnNode] = []
    level_last = {lvl: i for i, lvl in enumerate(range(min_level, max_level + 1))}
    level_td: dict[int, int] = {}
    next_id = num_levels
    # top-down: P_{L-1}^td ... P_min^td (the output at min_level is already final)
    above = level_last[max_level]
    for lvl in range(max_level - 1, min_level - 1, -1):
        nodes.append(FpnNode(lvl, (level_last[lvl], above)))
        level_td[lvl] = next_id
        above = next_id
        next_id += 1
    # bottom-up: P_{min+1}^out ... P_max^out
    below = level_td[min_level]
    for lvl in range(min_level + 1, max_level + 1):
        if lvl in level_td:
            inputs: tuple[int, ...] = (level_last[lvl], level_td[lvl], below)
        else:
            inputs = (level_last[lvl], below)
        nodes.append(FpnNode(lvl, inputs))
        below = next_id
        next_id += 1
    return nodes


def _resize_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Nearest up-sampling or 3x3/2 max-pool down-sampling to ``like``'s spatial size."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    if x.shape[-1] > like.shape[-1]:  # finer -> coarser
        x = F.max_pool2d(x, 3, 2, 1)
        if x.shape[-2:] != like.shape[-2:]:
            x = F.adaptive_max_pool2d(x, like.shape[-2:])
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


class WeightedFusion(nn.Module):
    """Fast normalised fusion ``sum(relu(w_i) x_i) / (sum(relu(w_i)) + eps)`` then a 3x3 conv."""

    def __init__(self, num_inputs: int, channels: int, asymmetric: bool, epsilon: float) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.ones(num_inputs))
        self.epsilon = epsilon
        self.conv = conv3x3_block(channels, channels, asymmetric=asymmetric)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        w = F.relu(self.weights)
        w = w / (w.sum() + self.epsilon)
        out = inputs[0] * w[0]
        for i in range(1, len(inputs)):
            out = out + inputs[i] * w[i]
        return self.conv(out)


class BiFpnCell(nn.Module):
    """One BiFPN cell over ``num_levels`` equally wide features."""

    def __init__(self, num_levels: int, channels: int, asymmetric: bool, epsilon: float) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.nodes = bifpn_nodes(0, num_levels - 1)
        self.fusions = nn.ModuleList(
            WeightedFusion(len(n.inputs), channels, asymmetric, epsilon) for n in self.nodes
        )

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        all_feats = list(feats)
        out_index = list(range(self.num_levels))
        for node, fusion in zip(self.nodes, self.fusions):
            target = all_feats[out_index[node.level]]
            inputs = [_resize_to(all_feats[i], target) for i in node.inputs]
            all_feats.append(fusion(inputs))
            out_index[node.level] = len(all_feats) - 1
        return [all_feats[i] for i in out_index]


class BiFpn(nn.Module):
    """BiFPN / ABi-FPN: 1x1 lateral projections to ``channels`` then ``repeats`` cells."""

    def __init__(self, in_channels: list[int], cfg: NeckConfig, asymmetric: bool) -> None:
        super().__init__()
        if cfg.repeats < 1:
            raise ValueError(f"neck repeats must be >= 1, got {cfg.repeats}")
        self.lateral = nn.ModuleList(
            ConvBnAct(c, cfg.channels, 1, act_layer=None) for c in in_channels
        )
        self.cells = nn.Sequential(
            *[
                BiFpnCell(len(in_channels), cfg.channels, asymmetric, cfg.epsilon)
                for _ in range(cfg.repeats)
            ]
        )
        self.out_channels = cfg.channels

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        x = [lat(f) for lat, f in zip(self.lateral, feats)]
        for cell in self.cells:
            x = cell(x)
        return x


class Fpn(nn.Module):
    """Plain FPN (Lin et al., 2017): 1x1 laterals, top-down nearest up-sampling + add, 3x3 outputs."""

    def __init__(self, in_channels: list[int], cfg: NeckConfig) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(
            ConvBnAct(c, cfg.channels, 1, act_layer=None) for c in in_channels
        )
        self.output = nn.ModuleList(
            ConvBnAct(cfg.channels, cfg.channels, 3) for _ in in_channels
        )
        self.out_channels = cfg.channels

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        lat = [layer(f) for layer, f in zip(self.lateral, feats)]
        outs = [lat[-1]]
        for i in range(len(lat) - 2, -1, -1):
            outs.insert(0, lat[i] + _resize_to(outs[0], lat[i]))
        return [conv(o) for conv, o in zip(self.output, outs)]


def build_neck(cfg: NeckConfig, in_channels: list[int]) -> nn.Module:
    """``"abifpn"`` (paper), ``"bifpn"`` or ``"fpn"``."""
    if cfg.name == "abifpn":
        return BiFpn(in_channels, cfg, asymmetric=True)
    if cfg.name == "bifpn":
        return BiFpn(in_channels, cfg, asymmetric=False)
    if cfg.name == "fpn":
        return Fpn(in_channels, cfg)
    raise ValueError(f"unknown neck {cfg.name!r}; expected 'abifpn', 'bifpn' or 'fpn'")
