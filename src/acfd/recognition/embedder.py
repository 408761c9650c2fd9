"""Face embedders: :class:`Recognizer` (a trained network) and :class:`PixelEmbedder` (the raw-pixel
baseline any user can compare with). Both map face crops to L2-normalised float32 ``(N, D)`` rows
and carry ``embedding_dim`` and ``model_id`` so a :class:`~acfd.recognition.gallery.Gallery` can
refuse embeddings from another model.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from acfd.recognition.calibration import l2_normalize
from acfd.recognition.crops import resize_square
from acfd.recognition.model import EmbedderConfig, EmbeddingNet, embedder_digest, load_embedder

logger = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"

#: File stem of the shipped default recognition model in ``acfd/weights``.
DEFAULT_RECOGNITION_MODEL = "recognition-cartoon-s"


def default_recognition_weights() -> Path:
    """Path of the shipped default recognition weights (may not exist in a development tree)."""
    return WEIGHTS_DIR / f"{DEFAULT_RECOGNITION_MODEL}.safetensors"


class Embedder(Protocol):
    """What galleries, protocols and the CLI need from a face embedder."""

    embedding_dim: int
    model_id: str
    input_size: int

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray: ...


def _check_crops(crops: Sequence[np.ndarray]) -> None:
    for i, crop in enumerate(crops):
        if not isinstance(crop, np.ndarray) or crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
            raise ValueError(
                f"crop {i}: expected an (H, W, 3) uint8 RGB array, got {getattr(crop, 'shape', type(crop).__name__)}"
            )


#: Levels per channel of :func:`colour_histogram` (8 x 8 x 8 = 512 bins).
HISTOGRAM_LEVELS = 8


def colour_histogram(crops: Sequence[np.ndarray], size: int = 64, levels: int = HISTOGRAM_LEVELS) -> np.ndarray:
    """Square-rooted joint RGB histograms ``(N, levels**3)`` of the crops (unit rows).

    Cartoon characters are drawn in flat colours, and the colours of hair, eyes, skin and clothes
    name them more reliably than shapes do; the square root (Hellinger kernel) keeps one large flat
    area from drowning the small ones.
    """
    out = np.zeros((len(crops), levels**3), dtype=np.float32)
    step = 256 // levels
    for i, crop in enumerate(crops):
        q = (resize_square(crop, size) // step).astype(np.int32)
        codes = (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]
        out[i] = np.sqrt(np.bincount(codes.ravel(), minlength=levels**3) / codes.size)
    return l2_normalize(out)


class Recognizer:
    """A trained face-embedding network.

    Args:
        weights: a ``.safetensors`` file written by ``acfd recognize train`` (or
            :func:`~acfd.recognition.model.save_embedder`); ``None`` for the shipped default model.
        device: ``cpu``, ``cuda``, ...
        batch_size: crops per forward pass.
        flip: average each crop's embedding with its mirror's (default: as stored in the weights).
        colour_weight: weight of the appended colour histogram (default: as stored in the weights).
        feature: ``pooled`` or ``embedding`` (default: as stored in the weights).

    Example:
        >>> rec = Recognizer()
        >>> feats = rec.embed([crop_face(image, box)])  # (1, rec.embedding_dim), unit rows
    """

    def __init__(
        self, weights: str | Path | None = None, device: str | torch.device = "cpu", batch_size: int = 64,
        flip: bool | None = None, colour_weight: float | None = None, feature: str | None = None,
    ) -> None:
        path = Path(weights) if weights is not None else default_recognition_weights()
        if weights is None and not path.is_file():
            raise FileNotFoundError(f"{path}: no default recognition model is shipped; pass weights=")
        self.net, self.metadata = load_embedder(path)
        digest = embedder_digest(self.net)
        self.device = torch.device(device)
        self.net.to(self.device)
        stored = self.net.cfg
        changes = {
            k: v for k, v in (("flip", flip), ("colour_weight", colour_weight), ("feature", feature))
            if v is not None and v != getattr(stored, k)
        }
        self.net.cfg = dataclasses.replace(stored, **changes)
        self.cfg: EmbedderConfig = self.net.cfg
        self.weights_path = path
        self.batch_size = batch_size
        self.embedding_dim = self.net.feature_dim + (HISTOGRAM_LEVELS**3 if self.cfg.colour_weight else 0)
        self.input_size = self.cfg.input_size
        self.enlarge_rate = self.cfg.enlarge_rate
        self.unknown_threshold = self.cfg.unknown_threshold
        # embeddings made with other test-time settings than the file's are not comparable with its own
        self.model_id = f"{path.stem}@{digest}" + "".join(f"+{k}={v}" for k, v in sorted(changes.items()))

    @classmethod
    def from_network(cls, net: EmbeddingNet, model_id: str, device: str | torch.device = "cpu") -> Recognizer:
        """Wrap an in-memory network (training-time evaluation) without a weights file."""
        self = cls.__new__(cls)
        self.net, self.metadata = net, {}
        self.device = torch.device(device)
        self.cfg = net.cfg
        self.weights_path = None
        self.batch_size = 64
        self.embedding_dim = net.feature_dim + (HISTOGRAM_LEVELS**3 if net.cfg.colour_weight else 0)
        self.input_size = net.cfg.input_size
        self.enlarge_rate, self.unknown_threshold = net.cfg.enlarge_rate, net.cfg.unknown_threshold
        self.model_id = model_id
        return self

    @property
    def assemble_settings(self) -> dict[str, float]:
        """The assembling thresholds stored with the weights (may be empty)."""
        return dict(self.cfg.assemble)

    def __repr__(self) -> str:
        return f"Recognizer({self.model_id!r}, backbone={self.cfg.backbone!r}, dim={self.embedding_dim}, input={self.input_size})"

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalised embeddings ``(N, D)`` float32 of RGB uint8 crops (resized to the input size)."""
        _check_crops(crops)
        if len(crops) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        was_training = self.net.training
        self.net.eval()
        out = []
        try:
            with torch.inference_mode():
                for start in range(0, len(crops), self.batch_size):
                    batch = np.stack([resize_square(c, self.input_size) for c in crops[start : start + self.batch_size]])
                    x = self.net.normalize(torch.from_numpy(batch).permute(0, 3, 1, 2).to(self.device))
                    if self.cfg.flip:
                        both = F.normalize(self.net.features(torch.cat([x, x.flip(-1)])).float(), dim=1)
                        out.append((both[: len(x)] + both[len(x) :]).cpu().numpy())
                    else:
                        out.append(self.net.features(x).float().cpu().numpy())
        finally:
            self.net.train(was_training)
        features = l2_normalize(np.concatenate(out))
        if self.cfg.colour_weight:
            features = l2_normalize(np.concatenate([features, self.cfg.colour_weight * colour_histogram(crops)], axis=1))
        return features


class PixelEmbedder:
    """Raw-pixel baseline: the crop resized to ``size`` x ``size``, mean-centred, L2-normalised.

    Args:
        size: side of the down-sampled crop (the feature has ``3 * size * size`` values).
    """

    def __init__(self, size: int = 32) -> None:
        self.input_size = size
        self.embedding_dim = 3 * size * size
        self.model_id = f"pixels-{size}x{size}-rgb"
        self.enlarge_rate = 1.0
        self.unknown_threshold = 0.5

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        _check_crops(crops)
        if len(crops) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        x = np.stack([resize_square(c, self.input_size) for c in crops]).reshape(len(crops), -1).astype(np.float32)
        return l2_normalize(x - x.mean(axis=1, keepdims=True))
