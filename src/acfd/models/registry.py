"""Named model variants (configs as data, as timm's ``model_cfgs``), their builders and size facts.

``acfd-l`` is the paper's model (VoVNetV3-51 + ABi-FPN); smaller variants share the design with
fewer channels and repeats. ``acfd-<backbone>`` variants are the Table 2 baselines; the neck can be
switched with ``create_model(name, **{"neck.name": "fpn"})`` for Table 3. Weights files (reading,
writing, what travels with them) are :mod:`acfd.predict.modelfile`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from acfd.config import SHIPPED_DETECTOR, BackboneConfig, HeadConfig, ModelConfig, NeckConfig, override
from acfd.models.detector import ACFD

_MODEL_CFGS: dict[str, ModelConfig] = {}
_ENTRYPOINTS: dict[str, Callable[..., ACFD]] = {}

#: The variant whose weights are shipped inside the package (``acfd.config.WEIGHTS_DIR``).
DEFAULT_MODEL = SHIPPED_DETECTOR


def register_model(name: str, cfg: ModelConfig) -> Callable[[Callable[..., ACFD]], Callable[..., ACFD]]:
    """Register ``cfg`` under ``name``; decorates a one-line entry point."""

    def decorator(fn: Callable[..., ACFD]) -> Callable[..., ACFD]:
        if name in _MODEL_CFGS:
            raise ValueError(f"model {name!r} is already registered")
        _MODEL_CFGS[name] = dataclasses.replace(cfg, name=name)
        _ENTRYPOINTS[name] = fn
        return fn

    return decorator


def list_models() -> list[str]:
    """Names of all registered variants."""
    return sorted(_MODEL_CFGS)


def get_model_config(name: str, **overrides: Any) -> ModelConfig:
    """The config of a named variant, with dotted-key overrides applied."""
    if name not in _MODEL_CFGS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return override(_MODEL_CFGS[name], **overrides) if overrides else _MODEL_CFGS[name]


def create_model(name: str, **overrides: Any) -> ACFD:
    """Build a named variant with random (Kaiming) weights.

    Args:
        name: a name from :func:`list_models`.
        **overrides: config overrides, dotted keys allowed (``**{"neck.repeats": 3}``) or
            ``neck__repeats=3``.
    """
    return ACFD(get_model_config(name, **overrides))


# --- variants ---------------------------------------------------------------------------------

_ACFD_L = ModelConfig(
    backbone=BackboneConfig(),  # VoVNetV3-51, Table 1
    neck=NeckConfig(name="abifpn", channels=128, repeats=3),
    head=HeadConfig(channels=128, num_convs=3),
)
_ACFD_M = ModelConfig(
    backbone=BackboneConfig(
        stem_chs=(32, 48, 96),
        stage_conv_chs=(80, 96, 112, 128, 96, 96),
        stage_out_chs=(128, 256, 384, 512, 128, 128),
        block_per_stage=(1, 1, 1, 1, 1, 1),
        layer_per_block=4,
    ),
    neck=NeckConfig(name="abifpn", channels=96, repeats=2),
    head=HeadConfig(channels=96, num_convs=2),
)
_ACFD_S = ModelConfig(
    backbone=BackboneConfig(
        stem_chs=(24, 32, 48),
        stage_conv_chs=(32, 48, 64, 80, 64, 64),
        stage_out_chs=(64, 128, 192, 256, 96, 96),
        block_per_stage=(1, 1, 1, 1, 1, 1),
        layer_per_block=3,
    ),
    neck=NeckConfig(name="abifpn", channels=64, repeats=2),
    head=HeadConfig(channels=64, num_convs=2),
)
_ACFD_N = ModelConfig(
    backbone=BackboneConfig(
        stem_chs=(16, 16, 32),
        stage_conv_chs=(24, 32, 40, 48, 32, 32),
        stage_out_chs=(48, 64, 96, 128, 64, 64),
        block_per_stage=(1, 1, 1, 1, 1, 1),
        layer_per_block=2,
    ),
    neck=NeckConfig(name="abifpn", channels=32, repeats=2),
    head=HeadConfig(channels=32, num_convs=1),
)
_ACFD_TINY = ModelConfig(
    backbone=BackboneConfig(
        stem_chs=(8, 8, 16),
        stage_conv_chs=(8, 8, 12, 12, 8, 8),
        stage_out_chs=(16, 16, 24, 24, 16, 16),
        block_per_stage=(1, 1, 1, 1, 1, 1),
        layer_per_block=2,
    ),
    neck=NeckConfig(name="abifpn", channels=16, repeats=1),
    head=HeadConfig(channels=16, num_convs=1),
)


@register_model("acfd-l", _ACFD_L)
def acfd_l(**overrides: Any) -> ACFD:
    """The paper's ACFD: VoVNetV3-51 + ABi-FPN (Table 1)."""
    return create_model("acfd-l", **overrides)


@register_model("acfd-m", _ACFD_M)
def acfd_m(**overrides: Any) -> ACFD:
    """A mid-size VoVNetV3 + ABi-FPN for GPU servers."""
    return create_model("acfd-m", **overrides)


@register_model("acfd-s", _ACFD_S)
def acfd_s(**overrides: Any) -> ACFD:
    """A small VoVNetV3 + ABi-FPN for laptop CPUs (the shipped default)."""
    return create_model("acfd-s", **overrides)


@register_model("acfd-n", _ACFD_N)
def acfd_n(**overrides: Any) -> ACFD:
    """A nano VoVNetV3 + ABi-FPN for real-time CPU use."""
    return create_model("acfd-n", **overrides)


@register_model("acfd-tiny", _ACFD_TINY)
def acfd_tiny(**overrides: Any) -> ACFD:
    """A tiny variant for tests."""
    return create_model("acfd-tiny", **overrides)


def _baseline(backbone: str) -> ModelConfig:
    return dataclasses.replace(
        _ACFD_L, backbone=BackboneConfig(name=backbone, extra_chs=(256, 256))
    )


for _bb in ("resnet50", "seresnet50", "res2net50", "resnest50", "efficientnet_b3", "vovnet39"):
    register_model(f"acfd-{_bb}", _baseline(_bb))(
        lambda _name=f"acfd-{_bb}", **overrides: create_model(_name, **overrides)
    )
register_model(
    "acfd-vovnet51-v2",
    dataclasses.replace(_ACFD_L, backbone=BackboneConfig(asymmetric=False)),
)(lambda **overrides: create_model("acfd-vovnet51-v2", **overrides))


# --- model facts ------------------------------------------------------------------------------


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_size_mb(model: torch.nn.Module, bytes_per_param: int = 4) -> float:
    """Size of the parameters and buffers in MB (1e6 bytes)."""
    n = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    return n * bytes_per_param / 1e6


@torch.no_grad()
def count_gflops(model: ACFD, height: int = 640, width: int = 640) -> float:
    """GFLOPs (2 x multiply-accumulates) of one forward pass, via ``torch.utils.flop_counter``."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, 3, height, width)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() / 1e9
