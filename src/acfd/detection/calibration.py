"""Size-aware score calibration: a detector's raw face score mapped to the precision it has at that
box size (not in the ACFD paper).

A single pooled ranking decides AP, but the raw scores of one network are not comparable across box
sizes: at the same raw score a small box is a face far less often than a large one. Learning
``P(true positive | raw score, box side)`` on training images and ranking by it re-orders the boxes
of different sizes (multivariate confidence calibration with the box geometry as a feature, as in
Küppers et al., "Multivariate Confidence Calibration for Object Detection", CVPR-W 2020). It is
applied to the final boxes, after NMS, so that NMS and the multi-view merge choose the same boxes
as without it (calibrated scores saturate near 1 for every box around a clear face). It also
makes the score mean something: a calibrated 0.6 is a face about 60% of the time on images like
the training ones, whatever the box size.

The map is fitted once per weights file by gradient-boosted trees (scikit-learn's
``HistGradientBoostingClassifier``, constrained to be non-decreasing in the raw score), tabulated on
a grid of (logit of the raw score, log box side in network-input pixels) and evaluated by bilinear
interpolation (NumPy), so inference needs neither scikit-learn, nor trees, nor torch. The table travels in the weights file's metadata (key :data:`METADATA_KEY`) and in the ONNX
export's metadata.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

#: Metadata key of the calibration table in a ``.safetensors`` weights file and an ``.onnx`` export.
METADATA_KEY = "score_calibration"
#: Default grid: raw scores 0.04-0.995 (as logits) by box sides 4-1024 input pixels (log scale).
GRID_LOGITS = (math.log(0.04 / 0.96), math.log(0.995 / 0.005))
GRID_LOG_SIDES = (math.log(4.0), math.log(1024.0))
GRID_SHAPE = (48, 32)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def box_sides(boxes: Any) -> Any:
    """``(K,)`` sides ``sqrt(w * h)`` of ``(K, 4)`` boxes (NumPy or torch), at least 1e-3 (degenerate boxes)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return area.clamp(min=1e-6).sqrt() if _is_torch(boxes) else np.sqrt(np.maximum(area, 1e-6))


def logit(p: Any) -> Any:
    """``log(p / (1 - p))`` of probabilities clamped to [1e-6, 1 - 1e-6] (NumPy float64 or torch)."""
    if _is_torch(p):
        p = p.clamp(1e-6, 1 - 1e-6)
        return p.log() - (-p).log1p()
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class ScoreCalibration:
    """A calibrated score per (raw score, box side): a table on an even grid, bilinear in between.

    Args:
        logit_range: the grid's first and last logit of the raw score.
        log_side_range: the grid's first and last natural log of the box side ``sqrt(w * h)`` in
            network-input pixels.
        table: ``(n_scores, n_sides)`` calibrated scores in [0, 1], non-decreasing along the score
            axis; outside the grid the nearest edge value holds.
        reference_scale: the test scale (``Scale.parse`` spec) whose input pixels the box sides
            are measured in: the scale the table was fitted at.
        fitted_on: a free-text note of what it was fitted on (kept in the metadata).
    """

    logit_range: tuple[float, float]
    log_side_range: tuple[float, float]
    table: tuple[tuple[float, ...], ...]
    reference_scale: str = "640"
    fitted_on: str = ""

    def __post_init__(self) -> None:
        t = np.asarray(self.table, dtype=np.float64)
        if t.ndim != 2 or t.shape[0] < 2 or t.shape[1] < 2:
            raise ValueError(f"a calibration table must be 2-D with at least 2x2 entries, got shape {t.shape}")
        if not np.isfinite(t).all() or t.min() < 0 or t.max() > 1:
            raise ValueError("calibration table values must be finite and in [0, 1]")
        if (np.diff(t, axis=0) < -1e-9).any():
            raise ValueError("a calibration table must not decrease along the score axis")
        for name, (lo, hi) in (("logit_range", self.logit_range), ("log_side_range", self.log_side_range)):
            if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                raise ValueError(f"calibration {name} must be two finite increasing numbers, got {(lo, hi)}")

    @cached_property
    def _table(self) -> np.ndarray:
        return np.asarray(self.table, dtype=np.float32)

    @cached_property
    def _best_per_score(self) -> np.ndarray:
        """``(n_scores,)`` the largest calibrated score over box sizes at each raw-score node."""
        return np.asarray(self.table).max(axis=1)

    def calibrate(self, scores: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Calibrated float32 scores of ``(K,)`` raw ``scores`` for ``(K, 4)`` ``boxes`` (x1, y1,
        x2, y2 in the input pixels of :attr:`reference_scale`): bilinear on the table, the nearest
        edge outside it (``grid_sample``'s ``align_corners=True``, ``border`` rule)."""
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        if scores.size == 0:
            return scores
        table = self._table
        (l0, l1), (s0, s1) = self.logit_range, self.log_side_range
        side = box_sides(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        u = np.clip((logit(scores) - l0) / (l1 - l0), 0.0, 1.0) * (table.shape[0] - 1)
        v = np.clip((np.log(side.astype(np.float64)) - s0) / (s1 - s0), 0.0, 1.0) * (table.shape[1] - 1)
        i0 = np.minimum(np.floor(u).astype(np.int64), table.shape[0] - 2)
        j0 = np.minimum(np.floor(v).astype(np.int64), table.shape[1] - 2)
        du, dv = (u - i0)[:, None], (v - j0)
        rows = table[i0] * (1 - du) + table[i0 + 1] * du  # (K, n_sides): interpolated along the score
        out = rows[np.arange(len(j0)), j0] * (1 - dv) + rows[np.arange(len(j0)), j0 + 1] * dv
        return out.astype(np.float32)

    def __call__(self, scores: Any, boxes: Any) -> Any:
        """:meth:`calibrate` for NumPy arrays or torch tensors (the type, dtype and device of ``scores``)."""
        if not _is_torch(scores):
            return self.calibrate(scores, boxes).astype(np.asarray(scores).dtype, copy=False)
        import torch  # the tensors' own library, already loaded by whoever made them

        out = self.calibrate(scores.detach().float().cpu().numpy(), boxes.detach().float().cpu().numpy())
        return torch.from_numpy(out).to(device=scores.device, dtype=scores.dtype)

    def raw_score_floor(self, thresh: float) -> float:
        """The largest raw score below which no box of any size calibrates above ``thresh``.

        The table does not decrease along the score axis, nor does its bilinear interpolation, so
        filtering raw scores at this floor before decoding loses nothing that ``thresh`` keeps.
        """
        best = self._best_per_score  # non-decreasing in the score
        above = np.nonzero(best > thresh)[0]
        if len(above) == 0:
            return 1.0
        if above[0] == 0:
            return 0.0
        l0, l1 = self.logit_range
        logit = l0 + (l1 - l0) * (above[0] - 1) / (len(best) - 1)
        return float(1.0 / (1.0 + math.exp(-logit)))

    def to_json(self) -> str:
        return json.dumps({"logit_range": list(self.logit_range), "log_side_range": list(self.log_side_range),
                           "table": [[round(v, 5) for v in row] for row in self.table],
                           "reference_scale": self.reference_scale, "fitted_on": self.fitted_on})

    @classmethod
    def from_json(cls, text: str, source: str = "calibration") -> ScoreCalibration:
        """Parse :meth:`to_json`'s text; ``ValueError`` naming ``source`` when it is not one."""
        try:
            d = json.loads(text)
            return cls(tuple(float(v) for v in d["logit_range"]), tuple(float(v) for v in d["log_side_range"]),
                       tuple(tuple(float(v) for v in row) for row in d["table"]), str(d["reference_scale"]),
                       str(d.get("fitted_on", "")))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: not a valid score calibration ({exc})") from None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], source: str) -> ScoreCalibration | None:
        """The calibration stored in a weights / ONNX file's metadata, or ``None`` when it has none."""
        text = metadata.get(METADATA_KEY)
        return None if text is None else cls.from_json(text, source)


def fit_score_calibration(
    scores: np.ndarray,
    sides: np.ndarray,
    is_true_positive: np.ndarray,
    reference_scale: str = "640",
    fitted_on: str = "",
    seed: int = 0,
) -> ScoreCalibration:
    """Fit :class:`ScoreCalibration` to detections labelled true / false positive.

    Args:
        scores: ``(D,)`` raw scores of the detections (one view, after NMS).
        sides: ``(D,)`` their box sides ``sqrt(w * h)`` in the input pixels of ``reference_scale``.
        is_true_positive: ``(D,)`` whether each matched a face (the official matching).
        reference_scale: the test scale the detections come from.
        fitted_on: note stored with the table.
        seed: the trees' random state.

    Raises:
        ValueError: mismatched lengths, or no true or no false positive to learn from.
        ImportError: scikit-learn is missing (``pip install scikit-learn``).
    """
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,  # the optional "train" extra: inference needs no scikit-learn
    )

    scores, sides = np.asarray(scores, np.float64).ravel(), np.asarray(sides, np.float64).ravel()
    y = np.asarray(is_true_positive).astype(bool).ravel()
    if not len(scores) == len(sides) == len(y):
        raise ValueError(f"got {len(scores)} scores, {len(sides)} sides and {len(y)} labels")
    if y.all() or not y.any():
        raise ValueError(f"calibration needs both true and false positives; got {int(y.sum())} of {len(y)} detections true")
    features = np.stack([logit(scores), np.log(np.maximum(sides, 1e-3))], 1)
    # Shallow trees, the score axis constrained monotone: a map, not a second detector.
    trees = HistGradientBoostingClassifier(max_depth=3, max_iter=200, learning_rate=0.05,
                                           monotonic_cst=[1, 0], random_state=seed).fit(features, y)
    logits = np.linspace(*GRID_LOGITS, GRID_SHAPE[0])
    log_sides = np.linspace(*GRID_LOG_SIDES, GRID_SHAPE[1])
    grid = np.stack(np.meshgrid(logits, log_sides, indexing="ij"), -1).reshape(-1, 2)
    table = trees.predict_proba(grid)[:, 1].reshape(GRID_SHAPE)
    table = np.maximum.accumulate(table, axis=0)  # exact monotonicity after float round-off
    return ScoreCalibration(GRID_LOGITS, GRID_LOG_SIDES, tuple(tuple(float(v) for v in row) for row in table),
                            reference_scale, fitted_on)


__all__ = ["METADATA_KEY", "ScoreCalibration", "box_sides", "fit_score_calibration", "logit"]
