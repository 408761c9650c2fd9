"""Configuration dataclasses for ACFD models, the one reader of settings from dicts, and where the
package keeps its shipped weights.

Variants are data (as in timm's ``model_cfgs``): a frozen :class:`ModelConfig` composed of small
frozen configs, named variants live in :mod:`acfd.models.registry`, and overrides go through
:func:`dataclasses.replace` / :func:`override`. Every settings dataclass read from a file (model
configs, training recipes, inference presets, verifier configs) goes through
:func:`dataclass_from_dict`, so unknown keys and wrong shapes give the same one-line errors.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: The folder of the weights shipped inside the package.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: The detector variant whose weights are shipped (``WEIGHTS_DIR / "acfd-n.safetensors"``).
SHIPPED_DETECTOR = "acfd-n"


@dataclass(frozen=True)
class BackboneConfig:
    """Backbone settings.

    ``name`` is ``"vovnet"`` for the paper's VoVNetV3/VoVNetV2 family (built here) or a timm model
    name for the Table 2 baselines (``resnet50``, ``seresnet50``, ``res2net50_26w_4s``,
    ``resnest50d``, ``efficientnet_b3``, ``ese_vovnet39b``).
    """

    name: str = "vovnet"
    # VoVNet family (paper Table 1): stem (conv1, conv2, conv3) and six stages.
    stem_chs: tuple[int, ...] = (64, 64, 128)
    stage_conv_chs: tuple[int, ...] = (128, 160, 192, 224, 128, 128)
    stage_out_chs: tuple[int, ...] = (256, 512, 768, 1024, 128, 128)
    block_per_stage: tuple[int, ...] = (1, 1, 2, 2, 1, 1)
    # Layers (3x3 convs) per OSA module: the paper does not say; VoVNetV2-39/57 use 5.
    layer_per_block: int = 5
    asymmetric: bool = True  # True: every 3x3 conv is an ACB (VoVNetV3); False: VoVNetV2.
    residual: bool = True
    attn: str | None = "ese"
    # timm baselines: channels of the two extra stride-2 conv-BN-ReLU layers (paper 4.2).
    extra_chs: tuple[int, ...] = (256, 256)


@dataclass(frozen=True)
class NeckConfig:
    """Feature pyramid: ``"abifpn"`` (paper 3.3), ``"bifpn"`` (EfficientDet) or ``"fpn"``."""

    name: str = "abifpn"
    channels: int = 128
    repeats: int = 2
    epsilon: float = 1e-4


@dataclass(frozen=True)
class HeadConfig:
    """Shared classification / regression subnets (RetinaNet-style) over all levels."""

    channels: int = 128
    num_convs: int = 2
    prior_prob: float = 0.01
    asymmetric: bool = False  # ACBs in the head too (not in the paper; off by default)
    # "none" (paper) or "gn": GroupNorm after each subnet conv, shared across levels (FCOS/ATSS).
    # GN normalises per image, so unlike BN it cannot be folded into the conv at deploy time: it stays
    # a (cheap) GroupNormalization node in the fused model and in ONNX.
    norm: str = "none"
    norm_groups: int = 8


@dataclass(frozen=True)
class AnchorConfig:
    """One square anchor per location of side ``scale * stride`` (paper 4.1: scale 4, ratio 1:1)."""

    strides: tuple[int, ...] = (4, 8, 16, 32, 64, 128)
    scale: float = 4.0


@dataclass(frozen=True)
class MatchConfig:
    """Dynamic Anchor Match thresholds (paper 3.4, Algorithm 1)."""

    iou_threshold: float = 0.35  # T1
    regressed_iou_threshold: float = 0.7  # T2
    dynamic: bool = True  # False gives the classic single-step IoU match (Table 4 baseline)
    # Also make each face's best anchor(s) positive, as torchvision's
    # ``Matcher(allow_low_quality_matches=True)``: no face is left without a positive anchor.
    low_quality_matches: bool = False


@dataclass(frozen=True)
class LossConfig:
    """Margin binary classification + smooth-L1 loss (paper eq. 1-3)."""

    margin: float = 0.2
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    lambda_cls: float = 0.7  # paper text: 0.7; the slides say 0.8
    lambda_reg: float = 0.7
    smooth_l1_beta: float = 1.0 / 9.0
    reg_weight: float = 1.0
    # Normaliser of the compensated (psi_2) terms of eq. 1-2: "n2" (paper: lambda / N2, the group
    # weighs lambda whatever its size), "n1" (lambda / N1: each compensated anchor weighs as much as a
    # matched one) or "n1+n2" (both groups by N1 + N2).
    compensated_norm: str = "n2"


@dataclass(frozen=True)
class BoxCoderConfig:
    """Box coding (Faster R-CNN deltas) with the SSD-style variances (0.1, 0.1, 0.2, 0.2)."""

    weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)


@dataclass(frozen=True)
class ModelConfig:
    """A whole ACFD detector. Stored resolved in every checkpoint."""

    name: str = "acfd-l"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    box_coder: BoxCoderConfig = field(default_factory=BoxCoderConfig)
    # Input normalisation (RGB, 0-255 scale).
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    # The network pads inputs to a multiple of this (the largest stride).
    size_divisor: int = 128


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON/YAML-friendly dict of a (nested) config dataclass."""
    return dataclasses.asdict(cfg)


def _coerce(value: Any, like: Any) -> Any:
    if isinstance(like, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def _is_tuple_type(hint: Any) -> bool:
    """Whether a field annotation is a tuple (or a union holding one)."""
    if hint is tuple or typing.get_origin(hint) is tuple:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_is_tuple_type(arg) for arg in typing.get_args(hint))
    return False


def dataclass_from_dict(cls: type[T], data: Any, what: str, keys: str = "keys") -> T:
    """An instance of the dataclass ``cls`` from a mapping read from a file (JSON, YAML, metadata).

    Unknown keys raise one ``ValueError`` naming them (``"unknown <what> <keys>: a, b (known: ...)"``);
    a list for a tuple field becomes a tuple; a field whose type is itself a dataclass is read
    recursively from a nested mapping (``"<field> config"`` in messages). Values are otherwise
    passed as they are: the dataclass's own ``__post_init__`` checks their ranges.

    Args:
        cls: the dataclass.
        data: the mapping.
        what: what the mapping is, for messages (``"model config"``, ``"training"``).
        keys: what its keys are called in messages (``"keys"``, ``"settings"``).

    Raises:
        ValueError: ``data`` is not a mapping, an unknown key, or a nested value of the wrong shape.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{what}: expected a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise ValueError(f"unknown {what} {keys}: {', '.join(unknown)} (known: {', '.join(names)})")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints.get(key)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            value = dataclass_from_dict(hint, value, f"{key} config")
        elif isinstance(value, list) and _is_tuple_type(hint):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def model_config_from_dict(data: Mapping[str, Any]) -> ModelConfig:
    """Inverse of :func:`config_to_dict` for :class:`ModelConfig` (see :func:`dataclass_from_dict`)."""
    return dataclass_from_dict(ModelConfig, data, "model config")


def override(cfg: Any, **overrides: Any) -> Any:
    """``dataclasses.replace`` that also accepts dotted keys, e.g. ``{"neck.repeats": 3}``."""
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        key = key.replace("__", ".")
        if "." in key:
            head, rest = key.split(".", 1)
            nested.setdefault(head, {})[rest] = value
        else:
            flat[key] = value
    for head, sub in nested.items():
        if not hasattr(cfg, head):
            raise ValueError(f"{type(cfg).__name__} has no field {head!r}")
        flat[head] = override(getattr(cfg, head), **sub)
    names = {f.name for f in dataclasses.fields(cfg)}
    for key in flat:
        if key not in names:
            raise ValueError(f"{type(cfg).__name__} has no field {key!r}")
    flat = {k: _coerce(v, getattr(cfg, k)) for k, v in flat.items()}
    return dataclasses.replace(cfg, **flat)
