"""Embedding networks: a timm backbone by name + an embedding layer (arXiv "Evaluation and baselines").

The papers' GPU backbones (ResNet-50, SE-ResNet-50, ResNeXt-50, DenseNet-169) and small CPU-friendly
ones are entries of :data:`BACKBONES` (variants as data, built by timm with ``pretrained=False``: no
download ever happens). The classification heads (``acfd.recognition.heads``) are used only in
training; at test time the L2-normalised embedding is the face's feature.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from acfd.recognition.crops import DEFAULT_ENLARGE_RATE, DEFAULT_INPUT_SIZE

#: Backbone names -> (timm model name, timm kwargs). ``timm:<name>`` also works for any timm model.
BACKBONES: dict[str, tuple[str, dict[str, Any]]] = {
    # the arXiv paper's baselines (table 2), for GPU users
    "resnet50": ("resnet50", {}),
    "seresnet50": ("seresnet50", {}),
    "resnext50": ("resnext50_32x4d", {}),
    "densenet169": ("densenet169", {}),
    # small CPU-friendly models (64-128 px crops)
    "resnet10t": ("resnet10t", {}),
    "resnet18": ("resnet18", {}),
    "mobilenetv3-small": ("mobilenetv3_small_100", {}),
    "lcnet-100": ("lcnet_100", {}),
}

#: What a recognition network hands out as the face's feature (:attr:`EmbedderConfig.feature`).
FEATURES = ("embedding", "pooled")

#: The backbone of the shipped default recognition model.
DEFAULT_BACKBONE = "resnet10t"


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_backbone` (besides ``timm:<any timm model>``)."""
    return sorted(BACKBONES)


def create_backbone(name: str) -> nn.Module:
    """A timm backbone that returns pooled features ``(N, C)`` (``num_features`` attribute set)."""
    if name.startswith("timm:"):
        timm_name, kwargs = name.split(":", 1)[1], {}
    elif name in BACKBONES:
        timm_name, kwargs = BACKBONES[name]
    else:
        raise ValueError(f"unknown backbone {name!r} (known: {', '.join(list_backbones())}, or timm:<name>)")
    return timm.create_model(timm_name, pretrained=False, num_classes=0, **kwargs)


@dataclass(frozen=True)
class EmbedderConfig:
    """What a recognition weights file needs to rebuild and use its network (stored in its metadata)."""

    backbone: str = DEFAULT_BACKBONE
    embedding_dim: int = 128
    input_size: int = DEFAULT_INPUT_SIZE
    enlarge_rate: float = DEFAULT_ENLARGE_RATE
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    #: cosine similarity below which ``acfd identify`` says "unknown" (chosen on the dev identities)
    unknown_threshold: float = 0.5
    #: weight of the colour histogram (:func:`~acfd.recognition.embedder.colour_histogram`) appended
    #: to the network's embedding; 0 for the network's embedding alone
    colour_weight: float = 0.0
    #: embed each crop and its mirror image and average the two (test-time flip)
    flip: bool = False
    #: the face's feature: ``pooled`` (the backbone's pooled features) or ``embedding`` (the
    #: trained embedding layer after them). On characters unseen in training the pooled features
    #: generalise better: the embedding layer specialises in the training characters, as a
    #: contrastive projection head does (SimCLR).
    feature: str = "embedding"
    #: assembling thresholds chosen for these weights on characters they were not trained on
    #: (``dup_sim``, ``candidate_sim``, ``cluster_sim``: :class:`acfd.assemble.config.AssembleConfig`)
    assemble: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbedderConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown recognition model settings: {', '.join(unknown)}")
        values = dict(data)
        if values.get("feature", "embedding") not in FEATURES:
            raise ValueError(f"feature must be one of {', '.join(FEATURES)}, got {values['feature']!r}")
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


class EmbeddingNet(nn.Module):
    """Backbone -> pooled features -> linear -> BatchNorm1d: the face embedding (not normalised).

    Args:
        cfg: backbone name, embedding size, input normalisation.
    """

    def __init__(self, cfg: EmbedderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = create_backbone(cfg.backbone)
        self.embedding = nn.Linear(self.backbone.num_features, cfg.embedding_dim, bias=False)
        self.bn = nn.BatchNorm1d(cfg.embedding_dim)
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1) * 255.0, persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0..255 float) ``(N, 3, S, S)`` -> normalised float."""
        return (images.float() - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images -> the configured face feature (``cfg.feature``), not normalised."""
        pooled = self.backbone(x)
        return pooled if self.cfg.feature == "pooled" else self.bn(self.embedding(pooled))

    @property
    def feature_dim(self) -> int:
        """Size of :meth:`features`' rows."""
        return int(self.backbone.num_features) if self.cfg.feature == "pooled" else self.cfg.embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images ``(N, 3, S, S)`` -> embeddings ``(N, D)``."""
        return self.bn(self.embedding(self.backbone(x)))


def save_embedder(model: EmbeddingNet, path: str | Path, half: bool = True, extra: dict[str, str] | None = None) -> Path:
    """Write ``model`` as safetensors (fp16 by default) with its :class:`EmbedderConfig` in the metadata."""
    from safetensors.torch import save_file

    from acfd.utils import atomic_path

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    metadata = {"task": "recognition", "config": json.dumps(model.cfg.to_dict())}
    metadata.update(extra or {})
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return Path(path)


#: Settings that leave a face's embedding as it is: files that differ only in them (thresholds
#: re-tuned with ``tools/set_assemble_thresholds.py``, say) are one model to galleries and projects.
NON_EMBEDDING_SETTINGS = ("unknown_threshold", "assemble")


def embedder_digest(net: EmbeddingNet, length: int = 12) -> str:
    """First ``length`` hex digits of a SHA-256 over the network's tensors and the settings that
    shape its embeddings (every :class:`EmbedderConfig` field but :data:`NON_EMBEDDING_SETTINGS`):
    what makes two files' embeddings comparable."""
    h = hashlib.sha256()
    settings = {k: v for k, v in net.cfg.to_dict().items() if k not in NON_EMBEDDING_SETTINGS}
    h.update(json.dumps(settings, sort_keys=True, default=list).encode())
    for name, tensor in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:length]


def load_embedder(path: str | Path) -> tuple[EmbeddingNet, dict[str, str]]:
    """Rebuild an :class:`EmbeddingNet` from a file written by :func:`save_embedder` (eval mode, fp32).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a recognition weights file, or its tensors do not fit its config.
    """
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: recognition weights not found")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k).float() for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{p}: not a readable safetensors file ({exc})") from exc
    if meta.get("task") != "recognition" or "config" not in meta:
        raise ValueError(f"{p}: not a recognition model (no recognition config in its metadata)")
    model = EmbeddingNet(EmbedderConfig.from_dict(json.loads(meta["config"])))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{p}: weights do not match the stored config ({str(exc).splitlines()[0]})") from exc
    return model.eval(), meta
