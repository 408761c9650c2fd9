"""The second-stage verifier at inference, without torch: its settings, the crop geometry, the
exported stage graph run by ONNX Runtime, and how its outputs change a box.

:mod:`acfd.detection.verifier` holds the network and its training-side tools (PyTorch); this module
is what a prediction needs once the verifier is exported (:meth:`BoxVerifier.export_stage`), so that
``acfd detect`` on the CPU never imports torch (about 3.5 s of start-up).

The exported **stage graph** takes the image resized to the verifier's ``long_side`` (``(1, 3, H,
W)`` float32, 0-255 RGB) and the crop squares in those pixels (``(K, 4)``) and returns ``(K, 5)``:
ONNX ``RoiAlign`` (torchvision's ``roi_align`` with ``aligned=True``, bit-exact), the crops rounded
to 8 bits and normalised, every member network on each crop and its mirror image, averaged. One
call per image, whatever the number of boxes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from acfd.config import dataclass_from_dict
from acfd.detection.protocol import PAPER_SCORE_THRESH
from acfd.utils import ort_session_options

#: Metadata key of the verifier's config and stacking in its ``.safetensors`` file and stage graph.
METADATA_KEY = "acfd_verifier"
#: ImageNet mean / std in 0-255 pixels (the verifier's input normalisation).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class VerifierConfig:
    """Architecture and crop geometry of a verifier variant.

    Args:
        name: the variant's registry name.
        channels: output channels of the four ResNet stages (one basic block each).
        stem_width: width of timm's deep stem (three 3x3 convolutions).
        crop_size: side of the square crop fed to the network, in pixels.
        context: crop side / box's longer side.
        long_side: the image is resized to this longer side before cropping.
        members: networks in the ensemble, trained alike with different seeds; their outputs
            (logit and offsets) are averaged (``members`` x the verify time).
    """

    name: str
    channels: tuple[int, int, int, int] = (32, 64, 128, 256)
    stem_width: int = 16
    crop_size: int = 64
    context: float = 1.6
    long_side: int = 640
    members: int = 1

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ValueError(f"verifier {self.name!r}: members must be at least 1, got {self.members}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VerifierConfig:
        cfg = dataclass_from_dict(cls, data, "verifier config")
        return dataclasses.replace(cfg, channels=tuple(int(c) for c in cfg.channels))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class VerifierStacking:
    """How the verifier's outputs change a final box (fitted by ``acfd train-verifier``).

    ``score = sigmoid(score_weight * logit(detector score) + verifier_weight * min(verifier logit,
    max_verifier_logit) + bias)`` (the detector score being its calibrated one when the weights
    have a calibration), and the box moves by ``box_step`` x the predicted offsets x its longer
    side. The cap on the verifier's logit (above any it gave on the training images) bounds how
    far it can raise a box, so boxes that cannot reach a score threshold need no crop
    (:meth:`min_detector_score`).

    Args:
        score_weight, verifier_weight, bias: the logistic regression's coefficients.
        box_step: fraction of the predicted box offsets applied (0: boxes unchanged).
        flip: average the outputs of each crop and its mirror image (as fitted).
        raw_score_floor: the raw detector score above which boxes were verified when fitting;
            the detector keeps every box above it for the verifier.
        calibrated: whether the stacking was fitted on calibrated detector scores.
        fitted_on: what it was fitted on (a note).
        max_verifier_logit: the cap on the verifier's logit.
        gate_logit: at inference with a score threshold, boxes that could only pass it with a
            verifier logit above this are not verified (:meth:`min_detector_score`); ``None``:
            ``max_verifier_logit`` (exact: no box that could pass is skipped). Chosen on held-out
            training images as the largest logit any box that passed needed, over thresholds
            0.2-0.8, plus a margin (``acfd.engine.verifier_training.choose_gate_logit``).
        unverified_logit: the verifier logit of the boxes a detector does not crop when it
            verifies only an image's best boxes (the preset's ``verifier_max_boxes``): the median
            logit the verifier gave such boxes on held-out training images (``None``: every box is
            verified whatever the preset says).
    """

    score_weight: float
    verifier_weight: float
    bias: float
    box_step: float = 1.0
    flip: bool = True
    raw_score_floor: float = PAPER_SCORE_THRESH
    calibrated: bool = True
    fitted_on: str = ""
    max_verifier_logit: float = 12.0
    gate_logit: float | None = None
    unverified_logit: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VerifierStacking:
        """The stacking stored in a verifier file (``raw_floor``: the older name of ``raw_score_floor``)."""
        values = dict(data)
        if "raw_floor" in values and "raw_score_floor" not in values:
            values["raw_score_floor"] = values.pop("raw_floor")
        return dataclass_from_dict(cls, values, "verifier stacking")

    def needed_logits(self, scores: np.ndarray, score_thresh: float) -> np.ndarray:
        """The verifier logit each detector score needs to end above ``score_thresh``."""
        target = float(_logit(np.asarray(score_thresh)))
        return (target - self.score_weight * _logit(scores) - self.bias) / self.verifier_weight

    def scores(self, scores: np.ndarray, verifier_logits: np.ndarray) -> np.ndarray:
        """The stacked scores (float64) of detector ``scores`` and the verifier's logits."""
        capped = np.minimum(np.asarray(verifier_logits, dtype=np.float64), self.max_verifier_logit)
        z = self.score_weight * _logit(scores) + self.verifier_weight * capped + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    def __call__(self, scores: Any, verifier_logits: Any) -> Any:
        """:meth:`scores` for torch tensors (the dtype and device of ``scores``)."""
        import torch  # the training side's tensors; inference uses scores()

        out = self.scores(scores.detach().double().cpu().numpy(), verifier_logits.detach().double().cpu().numpy())
        return torch.from_numpy(out).to(device=scores.device, dtype=scores.dtype)

    def min_detector_score(self, score_thresh: float) -> float:
        """The detector score at or below which no verifier logit up to :attr:`gate_logit` lifts a
        box above ``score_thresh`` (0 when every box may pass: no threshold, or weights that do not
        rise with the scores)."""
        if score_thresh <= 0 or self.score_weight <= 0 or self.verifier_weight < 0:
            return 0.0
        cap = self.max_verifier_logit if self.gate_logit is None else min(self.gate_logit, self.max_verifier_logit)
        best = self.verifier_weight * cap + self.bias
        z = (math.log(score_thresh) - math.log1p(-score_thresh) - best) / self.score_weight if score_thresh < 1 else math.inf
        return 1.0 / (1.0 + math.exp(-z)) if z < 700 else 1.0


def rescore_boxes(stacking: VerifierStacking, outputs: Callable[[np.ndarray], np.ndarray], boxes: np.ndarray,
                  scores: np.ndarray, image_size: tuple[int, int], score_thresh: float = 0.0,
                  max_boxes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One image's final boxes re-scored and refined by a verifier (PyTorch's and ONNX Runtime's
    alike): with ``score_thresh``, the boxes that cannot end above it are dropped first
    (:meth:`VerifierStacking.min_detector_score`); of the rest, the best ``max_boxes`` (by score;
    ``None``: all) are cropped (``outputs(boxes) -> (K, 5)``: face logit and corner offsets) and
    the others keep their box and are scored with :attr:`VerifierStacking.unverified_logit`
    (every box is cropped when the stacking has none).

    Returns:
        float32 ``(boxes, scores)``, in the order given (minus the dropped boxes).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if score_thresh > 0:
        keep = scores > stacking.min_detector_score(score_thresh)
        boxes, scores = boxes[keep], scores[keep]
    if len(boxes) == 0:
        return boxes, scores
    if max_boxes is None or len(boxes) <= max_boxes or stacking.unverified_logit is None:
        out = outputs(boxes)
        new_scores = stacking.scores(scores, out[:, 0]).astype(np.float32)
        return refine_boxes(boxes, out[:, 1:], stacking.box_step, image_size), new_scores
    top = np.sort(np.argsort(-scores, kind="stable")[:max_boxes])
    out = outputs(boxes[top])
    logits = np.full(len(boxes), stacking.unverified_logit, dtype=np.float64)
    logits[top] = out[:, 0]
    new_boxes = boxes.copy()
    new_boxes[top] = refine_boxes(boxes[top], out[:, 1:], stacking.box_step, image_size)
    return new_boxes, stacking.scores(scores, logits).astype(np.float32)


def box_long_sides(boxes: np.ndarray) -> np.ndarray:
    """``(K,)`` longer sides of ``(K, 4)`` boxes, at least 1 pixel."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.maximum(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]), 1.0)


def crop_source_size(height: int, width: int, cfg: VerifierConfig) -> tuple[int, int]:
    """``(height, width)`` of an image of that size resized to ``cfg.long_side`` on its longer side."""
    factor = cfg.long_side / max(height, width)
    return max(1, round(height * factor)), max(1, round(width * factor))


def resized_for_crops(image: np.ndarray, cfg: VerifierConfig) -> tuple[np.ndarray, float]:
    """The RGB ``(H, W, 3)`` image resized to ``cfg.long_side`` on its longer side (OpenCV area
    interpolation when shrinking, bilinear when enlarging) and the length factor applied."""
    height, width = image.shape[:2]
    factor = cfg.long_side / max(height, width)
    h, w = crop_source_size(height, width, cfg)
    resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    return resized, factor


def crop_squares(boxes: np.ndarray, factor: float, cfg: VerifierConfig) -> np.ndarray:
    """``(K, 4)`` float32 squares of ``cfg.context`` x the longer side, centred on each box
    (original pixels), in the pixels of the image resized by ``factor``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * factor
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    half = box_long_sides(b) * cfg.context / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], 1).astype(np.float32)


def refine_boxes(boxes: np.ndarray, offsets: np.ndarray, box_step: float, image_hw: tuple[int, int]) -> np.ndarray:
    """Boxes moved by ``box_step`` x the predicted corner ``offsets`` (units of the box's longer
    side), clipped to the image."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    long_side = np.maximum(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]), 1.0)
    out = boxes + np.float32(box_step) * np.asarray(offsets, dtype=np.float32) * long_side[:, None]
    height, width = image_hw
    out[:, 0::2] = out[:, 0::2].clip(0, width)
    out[:, 1::2] = out[:, 1::2].clip(0, height)
    return out


class VerifierSession:
    """The exported stage graph of a verifier (module docstring) in ONNX Runtime, with its config,
    stacking and the detector fingerprint it was fitted for (from the graph's metadata).

    Args:
        model: the graph: a file path or its bytes.
        num_threads: intra-op threads (``None``: one per core).
        source: where it came from (for messages).
    """

    def __init__(self, model: str | Path | bytes, num_threads: int | None = None, source: str = "") -> None:
        import onnxruntime as ort  # optional: PyTorch runs the verifier without it

        self.source = source or (str(model) if not isinstance(model, bytes) else "verifier graph")
        self.model = model
        data = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(data, ort_session_options(num_threads), providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - any ONNX Runtime failure is one line naming the file
            raise ValueError(f"{self.source}: not a readable verifier graph ({str(exc).splitlines()[0]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise ValueError(f"{self.source}: not a verifier graph (no {METADATA_KEY!r} metadata)")
        info = json.loads(meta[METADATA_KEY])
        self.cfg = VerifierConfig.from_dict(info["config"])
        self.stacking = VerifierStacking.from_dict(info["stacking"])
        self.detector = str(info.get("detector", ""))

    def with_threads(self, num_threads: int) -> VerifierSession:
        """A new session of the same graph with ``num_threads`` intra-op threads."""
        return type(self)(self.model, num_threads, self.source)

    def outputs(self, image: np.ndarray, boxes: np.ndarray, resized: np.ndarray | None = None) -> np.ndarray:
        """``(K, 5)`` outputs (face logit, corner offsets) for boxes of one RGB uint8 image.

        ``resized``: the image already resized as :func:`resized_for_crops` would (the detector's
        input at a scale of the same longer side: the same OpenCV call), to save resizing it again."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, 5), np.float32)
        height, width = image.shape[:2]
        if resized is not None and resized.shape[:2] == crop_source_size(height, width, self.cfg):
            factor = self.cfg.long_side / max(height, width)
        else:
            resized, factor = resized_for_crops(image, self.cfg)
        chw = np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32)
        return self.session.run(None, {"image": chw, "rois": crop_squares(boxes, factor, self.cfg)})[0]

    def __call__(self, image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, score_thresh: float = 0.0,
                 resized: np.ndarray | None = None, max_boxes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Re-scored and refined ``(boxes, scores)`` of one image's final boxes (original pixels);
        with ``score_thresh``, the boxes that cannot end above it are dropped first (no crop); at
        most ``max_boxes`` are cropped; ``resized`` as for :meth:`outputs` (:func:`rescore_boxes`)."""
        return rescore_boxes(self.stacking, lambda b: self.outputs(image, b, resized), boxes, scores,
                             image.shape[:2], score_thresh, max_boxes)


__all__ = [
    "METADATA_KEY",
    "VerifierConfig",
    "VerifierSession",
    "VerifierStacking",
    "box_long_sides",
    "crop_source_size",
    "crop_squares",
    "refine_boxes",
    "rescore_boxes",
    "resized_for_crops",
]
