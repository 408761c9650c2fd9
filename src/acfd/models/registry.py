"""Named model variants (configs as data, as timm's ``model_cfgs``) and loading helpers.

``acfd-l`` is the paper's model (VoVNetV3-51 + ABi-FPN); smaller variants share the design with
fewer channels and repeats. ``acfd-<backbone>`` variants are the Table 2 baselines; the neck can be
switched with ``create_model(name, **{"neck.name": "fpn"})`` for Table 3.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from acfd.config import (
    BackboneConfig,
    HeadConfig,
    ModelConfig,
    NeckConfig,
    config_to_dict,
    model_config_from_dict,
    override,
)
from acfd.models.detector import ACFD

logger = logging.getLogger(__name__)

_MODEL_CFGS: dict[str, ModelConfig] = {}
_ENTRYPOINTS: dict[str, Callable[..., ACFD]] = {}

#: The variant shipped inside the package (src/acfd/weights/).
DEFAULT_MODEL = "acfd-n"
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


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
#: acfd-n's backbone with a 1.5x wider neck and a 2x wider head (1.8x acfd-n's FLOPs, 0.44x acfd-s's):
#: the capacity step between the two, grown from a trained acfd-n by ``acfd.models.widen``.
_ACFD_NW = dataclasses.replace(
    _ACFD_N,
    neck=dataclasses.replace(_ACFD_N.neck, channels=48),
    head=dataclasses.replace(_ACFD_N.head, channels=64),
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


@register_model("acfd-nw", _ACFD_NW)
def acfd_nw(**overrides: Any) -> ACFD:
    """acfd-n with a wider neck (48) and head (64): grown from a trained acfd-n (``acfd.models.widen``)."""
    return create_model("acfd-nw", **overrides)


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
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    x = torch.zeros(1, 3, height, width)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() / 1e9


# --- weights ---------------------------------------------------------------------------------


def default_weights_path() -> Path | None:
    """The shipped default model's weights inside the package, or ``None`` if not shipped."""
    path = WEIGHTS_DIR / f"{DEFAULT_MODEL}.safetensors"
    return path if path.is_file() else None


def save_weights(model: ACFD, path: str | Path, half: bool = False, extra: dict[str, str] | None = None) -> Path:
    """Save ``model``'s state dict as safetensors with its config in the metadata (atomic)."""
    from safetensors.torch import save_file

    from acfd.utils import atomic_path

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    metadata = {"model": model.cfg.name, "config": json.dumps(config_to_dict(model.cfg))}
    metadata.update(extra or {})
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return Path(path)


def load_model(
    path_or_name: str | Path | None = None,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> ACFD:
    """Load a model.

    Args:
        path_or_name: a variant name, a ``.safetensors`` file (config in its metadata), a training
            checkpoint ``.pt``, or ``None`` for the shipped default model.
        weights: weights for a variant given by name (safetensors or checkpoint).
        device: where to put the model.

    Returns:
        The model in eval mode.

    Raises:
        FileNotFoundError: a missing file (named).
        ValueError: one line naming the file: unreadable/corrupt, an ``.onnx`` file, or weights
            of another variant (``"these weights are acfd-n, not acfd-s"``).
    """
    if path_or_name is None:
        path_or_name = default_weights_path()
        if path_or_name is None:
            raise FileNotFoundError(
                f"no default weights are shipped in {WEIGHTS_DIR}; pass a model name and weights"
            )
    src = str(path_or_name)
    if src in _MODEL_CFGS:
        model = create_model(src)
        if weights is not None:
            state, cfg_dict = _read_state_dict(Path(weights))
            _load_state(model, state, Path(weights), cfg_dict)
        else:
            logger.warning("model %s has random weights (no weights given)", src)
    else:
        path = Path(src)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: not a model name ({', '.join(list_models())}) nor an existing file"
            )
        state, cfg_dict = _read_state_dict(path)
        if cfg_dict is None:
            raise ValueError(f"{path}: no model config stored in the file")
        try:
            model = ACFD(model_config_from_dict(cfg_dict))
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}: the stored model config is not valid ({exc})") from None
        _load_state(model, state, path, cfg_dict)
    return model.to(device).eval()


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` weights file (``{}`` for a ``.pt`` checkpoint).

    Raises:
        FileNotFoundError / ValueError: as :func:`load_model`, one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    if path.suffix != ".safetensors":
        return {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ValueError(f"{path}: not a readable .safetensors file ({_first_line(exc)})") from None


def load_weights_into(model: ACFD, path: str | Path) -> None:
    """Load a weights file (safetensors or checkpoint) into an existing ``model``, one-line errors."""
    path = Path(path)
    state, cfg_dict = _read_state_dict(path)
    _load_state(model, state, path, cfg_dict)


def _load_state(model: ACFD, state: dict[str, torch.Tensor], path: Path, cfg_dict: dict[str, Any] | None) -> None:
    """``model.load_state_dict(state)`` with one-line errors naming the file and its variant.

    PyTorch lists every missing/unexpected/mis-shaped tensor (hundreds of lines for another
    variant); the file's own metadata usually says which variant it holds.
    """
    file_model = (cfg_dict or {}).get("name")
    want = model.cfg.name
    if file_model and file_model != want and file_model in _MODEL_CFGS:
        raise ValueError(f"{path}: these weights are {file_model}, not {want} (use --model {file_model} or leave --model out)")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        text = str(exc)
        counts = [f"{text.count(k)} {v}" for k, v in (("size mismatch", "mis-shaped"),) if k in text]
        missing, unexpected = (set(model.state_dict()) - set(state)), (set(state) - set(model.state_dict()))
        detail = ", ".join(counts + [f"{len(missing)} missing", f"{len(unexpected)} unexpected"])
        what = f"weights of {file_model}" if file_model else "weights of another model"
        raise ValueError(f"{path}: {what} do not fit {want} ({detail} tensors)") from None


def _read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    if path.suffix.lower() == ".onnx":
        raise ValueError(
            f"{path}: an ONNX export holds no PyTorch weights; run it with Detector(model=PATH) "
            "or acfd detect --model PATH, or give the .safetensors / .pt file it came from"
        )
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        state = {}
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                for k in f.keys():
                    state[k] = f.get_tensor(k).float()
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise ValueError(f"{path}: not a readable .safetensors file ({_first_line(exc)})") from None
        if meta.get("warning"):  # e.g. a placeholder model: say so every time it is loaded
            logger.warning("%s: %s", path.name, meta["warning"])
        try:
            cfg = json.loads(meta["config"]) if "config" in meta else None
        except json.JSONDecodeError:
            raise ValueError(f"{path}: the model config in the file's metadata is not valid JSON") from None
        if cfg is not None and meta.get("model") and "name" not in cfg:
            cfg["name"] = meta["model"]
        return state, cfg
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # corrupt, truncated or not a checkpoint
        raise ValueError(f"{path}: not a readable checkpoint ({_first_line(exc)})") from None
    if isinstance(ckpt, dict) and "model" in ckpt:
        state = ckpt.get("ema") or ckpt["model"]
        return state, ckpt.get("model_config")
    raise ValueError(f"{path}: not an acfd checkpoint (no 'model' entry)")
