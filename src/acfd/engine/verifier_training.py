"""Train a detector's second-stage face verifier on annotated images (``acfd train-verifier``).

1. The detector runs on the images at one scale with raw scores (> 0.08, the protocol's floor);
   each box is labelled face / not face by the official matching and, when it overlaps a face at
   IoU >= 0.4, gets that face's corner offsets as a regression target. The annotated faces are
   added as extra positives (:func:`collect_samples`).
2. Stacking (:mod:`acfd.detection.verifier`): a verifier (or ensemble) trained on 4/5 of the images scores the
   boxes of the other fifth; a logistic regression of (detector score, verifier logit) fitted on
   them gives the combination, and the box step is chosen by AP50 on that fifth.
3. The shipped verifier is then trained on all the images with the same recipe.

Use training images only: the dev split is for measuring the result.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou
from tqdm import tqdm

from acfd.data.formats import ImageRecord
from acfd.data.image_io import ImageReadError, load_image
from acfd.detection.calibration import logit
from acfd.detection.protocol import PAPER_SCORE_THRESH
from acfd.detection.verifier import (
    BoxVerifier,
    FaceVerifier,
    VerifierConfig,
    VerifierStacking,
    context_crops,
    flip_offsets,
    get_verifier_config,
    mirror_averaged,
    normalise_crops,
)
from acfd.detection.verifier_runtime import box_long_sides
from acfd.evaluation.icartoonface import evaluate_official, match_image
from acfd.predict.detector import Detector
from acfd.predict.modelfile import ModelFile
from acfd.predict.scales import Scale
from acfd.training import weight_decay_groups

logger = logging.getLogger(__name__)

#: Boxes overlapping a face at IoU >= this learn its offsets.
REGRESSION_IOU = 0.4
#: Box steps tried on the held-out images.
BOX_STEPS = (0.0, 0.5, 0.75, 1.0)


@dataclass
class VerifierSamples:
    """Crops of one detector's boxes (and of the annotated faces) with their targets.

    ``score`` / ``calibrated`` are NaN for the annotated faces (``is_detection`` False).
    """

    crops: torch.Tensor  # (N, 3, S, S) uint8
    is_face: np.ndarray  # (N,) bool
    offsets: np.ndarray  # (N, 4) float32, in units of the box's longer side
    has_offsets: np.ndarray  # (N,) bool
    is_detection: np.ndarray  # (N,) bool
    boxes: np.ndarray  # (N, 4) original pixels
    score: np.ndarray  # (N,) raw detector score
    calibrated: np.ndarray  # (N,) calibrated detector score (raw when the weights have no calibration)
    image: np.ndarray  # (N,) index into names
    names: list[str]
    failed: dict[str, str] = field(default_factory=dict)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return box_iou(torch.from_numpy(a).double(), torch.from_numpy(b).double()).numpy()


def collect_samples(
    weights: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    gt: Mapping[str, ImageRecord],
    names: Sequence[str],
    cfg: VerifierConfig,
    scale: str | None = None,
    nms_thresh: float | None = None,
    raw_score_floor: float = PAPER_SCORE_THRESH,
    batch_size: int = 4,
    progress: bool = False,
) -> VerifierSamples:
    """Detect (raw scores > ``raw_score_floor``, one ``scale``, no flip) and crop each box and face.

    ``scale`` and ``nms_thresh`` default to those of the weights' interactive preset (its first scale).

    Raises:
        ValueError: no image could be read.
    """
    model_file = ModelFile.open(weights)
    interactive = model_file.preset("interactive")
    detector = Detector.for_evaluation(weights, scales=scale or interactive.scales[0], flip=False,
                                       nms_thresh=nms_thresh or interactive.nms_thresh, agreement_iou=None,
                                       raw_score_floor=raw_score_floor, calibration=None, batch_size=batch_size,
                                       verifier=None)
    calibration = model_file.calibration
    root = Path(images_dir)
    parts: dict[str, list] = {k: [] for k in ("crops", "face", "off", "has", "det", "boxes", "score", "cal", "img")}
    kept: list[str] = []
    failed: dict[str, str] = {}
    for name in tqdm(names, desc="collect", unit="img", disable=not progress, file=sys.stderr, leave=False):
        try:
            image = load_image(root / name)
        except (ImageReadError, OSError) as exc:
            failed[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            continue
        dets = detector.detect_arrays([image])[0]
        faces = gt.get(name, ImageRecord(name)).boxes.astype(np.float64).reshape(-1, 4)
        boxes = dets.boxes.astype(np.float64).reshape(-1, 4)
        n = len(boxes)
        is_face = (match_image(faces, boxes) == 1) if n else np.zeros(0, bool)
        if calibration is not None and n:
            factor = Scale.parse(calibration.reference_scale).length_factor(*image.shape[:2])
            cal = calibration(torch.from_numpy(dets.scores).float(), torch.from_numpy(boxes).float() * factor).numpy()
        else:
            cal = dets.scores.astype(np.float64)
        every = np.concatenate([boxes, faces])
        if len(every) == 0:
            kept.append(name)
            continue
        offsets = np.zeros((len(every), 4), np.float32)
        has = np.zeros(len(every), bool)
        if len(faces):
            overlap = _iou(every, faces)
            best = overlap.argmax(1)
            side = np.maximum(every[:, 2] - every[:, 0], every[:, 3] - every[:, 1]).clip(min=1.0)[:, None]
            offsets = ((faces[best] - every) / side).astype(np.float32)
            has = overlap.max(1) >= REGRESSION_IOU
        parts["crops"].append(context_crops(image, every, cfg))
        parts["face"].append(np.r_[is_face, np.ones(len(faces), bool)])
        parts["off"].append(offsets)
        parts["has"].append(has)
        parts["det"].append(np.r_[np.ones(n, bool), np.zeros(len(faces), bool)])
        parts["boxes"].append(every.astype(np.float32))
        parts["score"].append(np.r_[dets.scores, np.full(len(faces), np.nan)])
        parts["cal"].append(np.r_[cal, np.full(len(faces), np.nan)])
        parts["img"].append(np.full(len(every), len(kept)))
        kept.append(name)
    if not kept:
        raise ValueError(f"{images_dir}: none of the {len(failed)} images could be read")
    s = cfg.crop_size
    return VerifierSamples(
        crops=torch.cat(parts["crops"]) if parts["crops"] else torch.zeros((0, 3, s, s), dtype=torch.uint8),
        is_face=np.concatenate(parts["face"]) if parts["face"] else np.zeros(0, bool),
        offsets=np.concatenate(parts["off"]) if parts["off"] else np.zeros((0, 4), np.float32),
        has_offsets=np.concatenate(parts["has"]) if parts["has"] else np.zeros(0, bool),
        is_detection=np.concatenate(parts["det"]) if parts["det"] else np.zeros(0, bool),
        boxes=np.concatenate(parts["boxes"]) if parts["boxes"] else np.zeros((0, 4), np.float32),
        score=np.concatenate(parts["score"]) if parts["score"] else np.zeros(0),
        calibrated=np.concatenate(parts["cal"]) if parts["cal"] else np.zeros(0),
        image=np.concatenate(parts["img"]) if parts["img"] else np.zeros(0, int),
        names=kept, failed=failed,
    )


def _augment(crops: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-crop mirror (50%), grey (15%), contrast 0.75-1.25 and brightness +-20 on uint8 crops.

    Written as batched tensor arithmetic rather than transforms.v2 (which draws one set of
    parameters per call): each crop gets its own, at no per-sample Python cost."""
    x = crops.float()
    b = len(x)
    mirrored = torch.rand(b, generator=generator) < 0.5
    x[mirrored] = x[mirrored].flip(-1)
    grey = torch.rand(b, generator=generator) < 0.15
    x[grey] = x[grey].mean(1, keepdim=True).expand(-1, 3, -1, -1)
    contrast = 0.75 + 0.5 * torch.rand(b, 1, 1, 1, generator=generator)
    brightness = 40 * (torch.rand(b, 1, 1, 1, generator=generator) - 0.5)
    return ((x - 128) * contrast + 128 + brightness).clamp_(0, 255), mirrored


def train_verifier(
    samples: VerifierSamples,
    cfg: VerifierConfig,
    mask: np.ndarray | None = None,
    epochs: int = 16,
    batch_size: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    negatives_per_positive: int = 3,
    warmup_iters: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> FaceVerifier:
    """Train a verifier on the samples selected by ``mask`` (default: all).

    Each epoch sees every positive and ``negatives_per_positive`` times as many negatives drawn
    afresh; AdamW with a linear warm-up and a cosine decay to 2% (the detector's CPU recipe);
    binary cross-entropy on the face logit plus smooth-L1 (beta 0.05) on the offsets of boxes that
    overlap a face. An ensemble (``cfg.members`` > 1) trains its networks one after another, each
    alone, with seeds ``seed``, ``seed + 1``, ...
    """
    if cfg.members > 1:
        single = dataclasses.replace(cfg, members=1)
        members = []
        for k in range(cfg.members):
            logger.info("verifier %s: member %d/%d (seed %d)", cfg.name, k + 1, cfg.members, seed + k)
            members.append(train_verifier(samples, single, mask=mask, epochs=epochs, batch_size=batch_size, lr=lr,
                                          weight_decay=weight_decay, negatives_per_positive=negatives_per_positive,
                                          warmup_iters=warmup_iters, seed=seed + k, progress=progress))
        return FaceVerifier.ensemble(cfg, members).eval()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    mask = np.ones(len(samples.is_face), bool) if mask is None else np.asarray(mask, bool)
    pos = np.nonzero(mask & samples.is_face)[0]
    neg = np.nonzero(mask & ~samples.is_face)[0]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"training the verifier needs faces and non-faces; got {len(pos)} and {len(neg)}")
    per_epoch = len(pos) + min(len(neg), negatives_per_positive * len(pos))
    batch_size = max(2, min(batch_size, per_epoch))
    steps = max(1, epochs * (per_epoch // batch_size))
    model = FaceVerifier(cfg).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(weight_decay_groups(model, weight_decay), lr=lr)
    warm = max(1, min(warmup_iters, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    labels = torch.from_numpy(samples.is_face.astype(np.float32))
    offsets = torch.from_numpy(samples.offsets)
    has = torch.from_numpy(samples.has_offsets)
    start = time.perf_counter()
    bar = tqdm(total=steps, desc="verifier", unit="step", disable=not progress, file=sys.stderr, leave=False)
    for epoch in range(epochs):
        order = np.concatenate([pos, rng.choice(neg, per_epoch - len(pos), replace=False)])
        rng.shuffle(order)
        totals = [0.0, 0.0, 0]
        for k in range(0, len(order) - batch_size + 1, batch_size):
            idx = torch.from_numpy(order[k:k + batch_size])
            x, mirrored = _augment(samples.crops[idx], generator)
            out = model(normalise_crops(x))
            target = offsets[idx].clone()
            target[mirrored] = flip_offsets(target[mirrored])
            m = has[idx]
            loss_cls = F.binary_cross_entropy_with_logits(out[:, 0], labels[idx])
            loss_box = F.smooth_l1_loss(out[m, 1:], target[m], beta=0.05) if bool(m.any()) else out.sum() * 0
            opt.zero_grad(set_to_none=True)
            (loss_cls + loss_box).backward()
            opt.step()
            sched.step()
            totals[0] += loss_cls.item()
            totals[1] += loss_box.item()
            totals[2] += 1
            bar.update(1)
        if totals[2]:
            bar.set_postfix(cls=f"{totals[0] / totals[2]:.3f}", box=f"{totals[1] / totals[2]:.3f}")
            logger.info("verifier epoch %d/%d: loss_cls %.4f loss_box %.4f (%.0f s)", epoch + 1, epochs,
                        totals[0] / totals[2], totals[1] / totals[2], time.perf_counter() - start)
    bar.close()
    return model.eval()


@torch.inference_mode()
def predict(model: FaceVerifier, crops: torch.Tensor, flip: bool = True, batch_size: int = 512) -> torch.Tensor:
    """``(N, 5)`` outputs for uint8 crops (mirror-averaged with ``flip``)."""
    model.eval()
    parts = [torch.zeros((0, 5))]
    for k in range(0, len(crops), batch_size):
        x = normalise_crops(crops[k:k + batch_size])
        parts.append(mirror_averaged(model, x) if flip else model(x))
    return torch.cat(parts)


def held_out(names: Sequence[str], folds: int = 5) -> np.ndarray:
    """``(len(names),)`` bool: the images of the stacking fold (CRC-32 of the name mod ``folds`` == 0),
    stable whatever the order or subset of the images."""
    return np.array([zlib.crc32(n.encode()) % folds == 0 for n in names], bool)


@dataclass
class VerifierFit:
    """A trained verifier with what its stacking was measured on."""

    verifier: BoxVerifier
    num_samples: int
    num_faces: int
    holdout_images: int
    holdout_ap50: dict[str, float]  # "detector", then "verified (box step s)" per step tried
    failed: dict[str, str] = field(default_factory=dict)


def _holdout_ap50(samples: VerifierSamples, rows: np.ndarray, scores: np.ndarray, boxes: np.ndarray,
                  gt: Mapping[str, ImageRecord], images: np.ndarray) -> float:
    preds = {samples.names[i]: ImageRecord(samples.names[i]) for i in images}
    for i in images:
        sel = samples.image[rows] == i
        name = samples.names[i]
        preds[name] = ImageRecord(name, boxes[sel].astype(np.float32), scores[sel].astype(np.float32))
    truth = {samples.names[i]: gt.get(samples.names[i], ImageRecord(samples.names[i])) for i in images}
    return 100 * evaluate_official(truth, preds).ap


def fit_stacking(samples: VerifierSamples, rows: np.ndarray, out: np.ndarray, gt: Mapping[str, ImageRecord],
                 images: np.ndarray) -> tuple[Any, dict[str, float], float]:
    """Fit the stacking on held-out boxes ``rows`` (of the images ``images``, indices into
    ``samples.names``, found faces or not) given a verifier's ``(len(rows), 5)`` outputs.

    Returns the logistic regression of (logit(calibrated score), verifier logit), the held-out AP50
    (``"detector"``, then ``"verified (box step s)"`` per step of :data:`BOX_STEPS`) and the best step.
    """
    from sklearn.linear_model import LogisticRegression  # the optional "train" extra

    y = samples.is_face[rows]
    features = np.stack([logit(samples.calibrated[rows]), out[:, 0]], 1)
    lr = LogisticRegression(C=1.0).fit(features, y)
    stacked = lr.predict_proba(features)[:, 1]
    boxes = samples.boxes[rows].astype(np.float64)
    side = box_long_sides(boxes)[:, None]
    ap = {"detector": _holdout_ap50(samples, rows, samples.calibrated[rows], boxes, gt, images)}
    for step in BOX_STEPS:
        ap[f"verified (box step {step})"] = _holdout_ap50(samples, rows, stacked, boxes + step * out[:, 1:] * side, gt, images)
    best_step = max(BOX_STEPS, key=lambda s: ap[f"verified (box step {s})"])
    return lr, ap, best_step


def fit_verifier(
    weights: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    gt: Mapping[str, ImageRecord],
    names: Sequence[str],
    variant: str = "r4-32",
    epochs: int = 16,
    scale: str | None = None,
    nms_thresh: float | None = None,
    flip: bool = True,
    batch_size: int = 4,
    seed: int = 0,
    progress: bool = False,
    source: str | None = None,
    max_verifier_logit: float = 12.0,
) -> VerifierFit:
    """Collect samples, fit the stacking on a held-out fifth, train the final verifier on all.

    ``max_verifier_logit`` caps the verifier's logit in the stacking
    (:class:`~acfd.detection.verifier.VerifierStacking`): a lower cap lets the detector skip the
    crops of more low-scoring boxes at a score threshold (faster) and clips only the most certain
    logits. The stacking's fit and the held-out AP50 do not depend on it. ``scale`` and
    ``nms_thresh`` default to those of the weights' interactive preset.

    Raises:
        ValueError: unreadable images only, or no face / no false positive to learn from.
    """
    cfg = get_verifier_config(variant)
    samples = collect_samples(weights, images_dir, gt, names, cfg, scale=scale, nms_thresh=nms_thresh,
                              batch_size=batch_size, progress=progress)
    hold_image = held_out(samples.names)
    hold = hold_image[samples.image] if len(samples.image) else np.zeros(0, bool)
    rows = np.nonzero(hold & samples.is_detection)[0]
    y = samples.is_face[rows]
    if len(rows) == 0 or y.all() or not y.any():
        raise ValueError(f"{images_dir}: the held-out fifth needs both faces and false positives among its boxes")
    logger.info("verifier: %d samples, %d faces; stacking on %d boxes of %d held-out images",
                len(samples.is_face), int(samples.is_face.sum()), len(rows), int(hold_image.sum()))
    first = train_verifier(samples, cfg, mask=~hold, epochs=epochs, seed=seed, progress=progress)
    out = predict(first, samples.crops[rows], flip=flip).double().numpy()
    images = np.nonzero(hold_image)[0]
    lr, ap, best_step = fit_stacking(samples, rows, out, gt, images)
    logger.info("verifier: held-out AP50 %s; training the final verifier on all the images",
                ", ".join(f"{k} {v:.2f}" for k, v in ap.items()))
    model_file = ModelFile.open(weights)
    calibrated = model_file.calibration is not None
    interactive = model_file.preset("interactive")
    scale, nms_thresh = scale or interactive.scales[0], nms_thresh or interactive.nms_thresh
    note = (f"{len(samples.names)} images of {source or images_dir}, scale {scale}, NMS {nms_thresh}; stacking on "
            f"{len(images)} held-out images: AP50 {ap['detector']:.2f} -> {ap[f'verified (box step {best_step})']:.2f}")
    stacking = VerifierStacking(float(lr.coef_[0, 0]), float(lr.coef_[0, 1]), float(lr.intercept_[0]),
                                box_step=float(best_step), flip=flip, raw_score_floor=PAPER_SCORE_THRESH,
                                calibrated=calibrated, fitted_on=note, max_verifier_logit=float(max_verifier_logit))
    stacking = dataclasses.replace(stacking, gate_logit=choose_gate_logit(stacking, samples.calibrated[rows], out[:, 0]))
    # the final networks get seeds the fold's did not use (one network: fold seed, final seed + 1)
    final = train_verifier(samples, cfg, epochs=epochs, seed=seed + cfg.members, progress=progress)
    verifier = BoxVerifier(final, stacking, detector=model_file.fingerprint or "", source="")
    return VerifierFit(verifier, len(samples.is_face), int(samples.is_face.sum()), len(images), ap, samples.failed)


#: Score thresholds the verifier's gate is chosen for, and the margin added to what they needed.
GATE_THRESHOLDS = tuple(np.round(np.arange(0.2, 0.81, 0.05), 2))
GATE_MARGIN = 0.5


def choose_gate_logit(stacking: VerifierStacking, scores: np.ndarray, logits: np.ndarray,
                      thresholds: Sequence[float] = GATE_THRESHOLDS, margin: float = GATE_MARGIN) -> float | None:
    """:attr:`VerifierStacking.gate_logit` from boxes of held-out images: their detector scores
    and verifier logits. It is the largest logit that a box which ended above one of ``thresholds``
    needed (:meth:`VerifierStacking.needed_logits`), plus ``margin``; ``None`` when that reaches the
    cap anyway (the gate is then exact)."""
    scores, logits = np.asarray(scores, np.float64), np.asarray(logits, np.float64)
    needed = [stacking.needed_logits(scores, t)[np.minimum(logits, stacking.max_verifier_logit) > stacking.needed_logits(scores, t)]
              for t in thresholds]
    passed = np.concatenate(needed) if needed else np.zeros(0)
    if len(passed) == 0 or stacking.verifier_weight <= 0:
        return None
    gate = float(np.ceil((passed.max() + margin) * 2) / 2)  # to a half logit
    return None if gate >= stacking.max_verifier_logit else gate


__all__ = ["GATE_MARGIN", "GATE_THRESHOLDS", "VerifierFit", "VerifierSamples", "choose_gate_logit", "collect_samples", "fit_stacking", "fit_verifier", "held_out", "predict", "train_verifier"]
