"""Fit a weights file's size-aware score calibration on annotated images (``acfd calibrate``).

The detector runs on the images at one scale (that of the weights' interactive preset), its detections are labelled
true / false positive by the official iCartoonFace matching, and
:func:`acfd.detection.calibration.fit_score_calibration` learns the precision of each (raw score,
box side) from them. Fit on *training* images: the dev split is for measuring the result.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from acfd.data.formats import ImageRecord
from acfd.data.image_io import read_image_size
from acfd.detection.calibration import METADATA_KEY, ScoreCalibration, box_sides, fit_score_calibration
from acfd.engine.evaluate import evaluate_model
from acfd.evaluation.icartoonface import match_image
from acfd.predict.modelfile import ModelFile, write_metadata
from acfd.predict.scales import Scale


@dataclass
class CalibrationFit:
    """A fitted calibration, the detections it learned from, and the files that failed."""

    calibration: ScoreCalibration
    num_detections: int
    num_true_positives: int
    failed: dict[str, str] = field(default_factory=dict)


def calibration_samples(
    predictions: Mapping[str, ImageRecord], gt: Mapping[str, ImageRecord], images_dir: str | os.PathLike[str],
    scale: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(scores, sides in network-input pixels, is_true_positive)`` of one scale's detections.

    Labels follow the official matching (IoU >= 0.5, each face taken once, in score order);
    detections the protocol ignores (images without faces) are left out.
    """
    view = Scale.parse(scale)
    scores, sides, labels = [], [], []
    for name, pred in predictions.items():
        if len(pred.boxes) == 0:
            continue
        order = np.argsort(-pred.scores, kind="stable")
        boxes, sc = pred.boxes[order].astype(np.float64), pred.scores[order]
        face = gt.get(name)
        lab = match_image(np.zeros((0, 4)) if face is None else face.boxes, boxes)
        width, height = read_image_size(Path(images_dir) / name)
        side = box_sides(torch.from_numpy(boxes)).numpy() * view.length_factor(height, width)
        counted = lab >= 0
        scores.append(sc[counted]), sides.append(side[counted]), labels.append(lab[counted] == 1)
    if not scores:
        return np.zeros(0), np.zeros(0), np.zeros(0, bool)
    return np.concatenate(scores), np.concatenate(sides), np.concatenate(labels)


def calibrate_model(
    model: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    gt: Mapping[str, ImageRecord],
    names: Sequence[str] | None = None,
    scale: str | None = None,
    nms_thresh: float | None = None,
    batch_size: int = 4,
    progress: bool = False,
    source: str | None = None,
) -> CalibrationFit:
    """Run the model (raw scores, score > 0.08, one ``scale``, no flip) on ``names`` and fit its
    score calibration to the official true / false positives.

    ``scale`` and ``nms_thresh`` default to those of the weights' interactive preset (its first
    scale); ``source`` describes the images in the table's note (default: their folder).

    Raises:
        ValueError: no image could be read, or the detections hold no true or no false positive.
    """
    interactive = ModelFile.open(model).preset("interactive")
    scale = scale if scale is not None else interactive.scales[0]
    nms_thresh = nms_thresh if nms_thresh is not None else interactive.nms_thresh
    ev = evaluate_model(model, images_dir, gt, names, scales=scale, batch_size=batch_size, progress=progress,
                        flip=False, nms_thresh=nms_thresh, agreement_iou=None, calibration=None,
                        verifier=None)
    if not ev.predictions:
        raise ValueError(f"{images_dir}: none of the {len(ev.failed)} images could be read")
    scores, sides, is_tp = calibration_samples(ev.predictions, gt, images_dir, scale)
    note = (f"{len(ev.predictions)} images of {source or images_dir}, scale {scale}, NMS {nms_thresh}, "
            f"raw AP50 {100 * ev.ap50:.2f}")
    calibration = fit_score_calibration(scores, sides, is_tp, reference_scale=scale, fitted_on=note)
    return CalibrationFit(calibration, len(scores), int(is_tp.sum()), ev.failed)


def save_calibrated_weights(source: str | os.PathLike[str], calibration: ScoreCalibration,
                            out: str | os.PathLike[str]) -> Path:
    """Copy the ``.safetensors`` file ``source`` to ``out`` (atomically; ``source`` is never
    changed unless it *is* ``out``) with ``calibration`` in its metadata, tensors untouched."""
    if Path(source).suffix != ".safetensors":
        raise ValueError(f"{source}: a calibration is stored in a .safetensors weights file (export one with acfd train or save_weights)")
    return write_metadata(source, out, {METADATA_KEY: calibration.to_json()})


__all__ = ["CalibrationFit", "calibrate_model", "calibration_samples", "save_calibrated_weights"]
