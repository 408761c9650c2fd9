"""Detection with ONNX Runtime and NumPy alone: the CPU path that never imports torch.

Importing torch and torchvision takes about 3.5 s, several times what one image costs, so a
command-line call on one image would spend most of its time loading a library it does not need.
:class:`OnnxPipeline` runs an exported detector graph (``acfd export``; the shipped model's graph
ships in the package as ``acfd-n.onnx``) and the exported verifier stage
(:mod:`acfd.detection.verifier_runtime`, ``acfd-n-verifier.onnx``) with ONNX Runtime, and does the
rest in NumPy. It computes what :class:`~acfd.predict.detector.Detector` computes: pre-processing of
each view (scale, mirrored or not), score floor, top-k, box decoding, NMS, the mapping back to the
image, the merge of the views (NMS, view agreement), score calibration, the verifier, the threshold.
``tests/test_onnx_pipeline.py`` holds the two to the same boxes. ``Detector`` itself runs its CPU
ONNX Runtime work through one (its post-processing is the cheaper: no thread pool to wake).

:func:`open_pipeline` gives one when the settings allow it (CPU, ONNX Runtime installed, the graphs
present and exported from the weights asked for), else ``None``, and the caller uses
:class:`~acfd.predict.detector.Detector`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from acfd.config import (
    SHIPPED_DETECTOR,
    WEIGHTS_DIR,
    ModelConfig,
)
from acfd.deploy.onnx_runner import OnnxRunner
from acfd.deploy.precision import check_precision, float_graph_stem, int8_graph_path, resolve_precision
from acfd.detection.calibration import ScoreCalibration
from acfd.detection.protocol import PAPER_MAX_DET, PAPER_TOPK
from acfd.detection.verifier_runtime import VerifierSession
from acfd.predict.inputs import ImageInput, as_rgb_array, is_batch, resize
from acfd.predict.parallel import ImageWorkers
from acfd.predict.presets import FROM_PRESET, Preset, read_presets
from acfd.predict.presets import METADATA_KEY as PRESETS_KEY
from acfd.predict.results import Detections, Timings
from acfd.predict.scales import Scale, parse_scales
from acfd.utils import default_threads, file_sha256

logger = logging.getLogger(__name__)

#: Metadata key of the fingerprint of the weights an export came from (as ``ModelFile``).
SOURCE_KEY = "acfd_source_weights"


def shipped_graphs(name: str = SHIPPED_DETECTOR) -> tuple[Path, Path]:
    """Where the package keeps the exported graphs of the shipped detector ``name`` and its verifier."""
    return WEIGHTS_DIR / f"{name}.onnx", WEIGHTS_DIR / f"{name}-verifier.onnx"


# -- boxes in NumPy (torchvision's semantics) --------------------------------------------------

def grid_anchors(strides: Sequence[int], scale: float, height: int, width: int) -> np.ndarray:
    """``(A, 4)`` float32 anchors of a padded ``height`` x ``width`` input, level by level,
    row-major: one square of side ``scale * stride`` per cell (as ``AnchorGenerator``)."""
    out = []
    for stride in strides:
        h, w = -(-height // stride), -(-width // stride)
        half = np.float32(scale * stride / 2)
        ys = (np.arange(h, dtype=np.float32) + np.float32(0.5)) * np.float32(stride)
        xs = (np.arange(w, dtype=np.float32) + np.float32(0.5)) * np.float32(stride)
        cy, cx = np.meshgrid(ys, xs, indexing="ij")
        cx, cy = cx.reshape(-1), cy.reshape(-1)
        out.append(np.stack([cx - half, cy - half, cx + half, cy + half], axis=1))
    return np.concatenate(out).astype(np.float32)


def decode_boxes(deltas: np.ndarray, anchors: np.ndarray, weights: Sequence[float], clip: float) -> np.ndarray:
    """Boxes from anchor-relative deltas (``BoxCoder.decode``), float32."""
    wx, wy, ww, wh = (np.float32(w) for w in weights)
    deltas = deltas.astype(np.float32, copy=False)
    aw = anchors[:, 2] - anchors[:, 0]
    ah = anchors[:, 3] - anchors[:, 1]
    ax = anchors[:, 0] + np.float32(0.5) * aw
    ay = anchors[:, 1] + np.float32(0.5) * ah
    dw = np.minimum(deltas[:, 2] / ww, np.float32(clip))
    dh = np.minimum(deltas[:, 3] / wh, np.float32(clip))
    cx = deltas[:, 0] / wx * aw + ax
    cy = deltas[:, 1] / wy * ah + ay
    w = np.exp(dw) * aw
    h = np.exp(dh) * ah
    return np.stack([cx - np.float32(0.5) * w, cy - np.float32(0.5) * h,
                     cx + np.float32(0.5) * w, cy + np.float32(0.5) * h], axis=1)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float, max_keep: int | None = None) -> np.ndarray:
    """Indices kept by greedy NMS, scores descending (``torchvision.ops.nms``: a box is dropped
    when its IoU with a kept, higher-scoring box is above ``iou_thresh``). Hand-written because
    torchvision is the one library here that has it and importing it is what this module avoids."""
    order = np.argsort(-scores, kind="stable")
    boxes = boxes.astype(np.float32, copy=False)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size and (max_keep is None or len(keep) < max_keep):
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        iou = inter / (area[i] + area[rest] - inter)
        order = rest[~(iou > iou_thresh)]
    return np.asarray(keep, dtype=np.int64)


#: A view that enlarges an image more than this (length factor) shows faces larger than the
#: training crops did (the paper's random crops enlarge at most 1 / 0.3 = 3.3x, the CPU recipe's
#: zoom 1.5x): small parts of a face (an eye) can then be boxed as faces. Such a view is warned about.
MAX_UPSCALE = 4.0


def warn_upscale(scale: Scale, height: int, width: int, warned: set[str]) -> None:
    """Warn (once per scale: ``warned`` keeps them) when ``scale`` enlarges an image beyond :data:`MAX_UPSCALE`."""
    factor = scale.length_factor(height, width)
    if factor > MAX_UPSCALE and str(scale) not in warned:
        warned.add(str(scale))
        logger.warning(
            "scale %s enlarges a %dx%d image %.1fx (more than %gx): its faces get larger than the training "
            "crops showed them and parts of faces may be boxed as faces; use a smaller scale for small images",
            scale, height, width, factor, MAX_UPSCALE)


def detect_inputs(detector: Any, images: Any, bgr: bool) -> Any:
    """``detector.detect_arrays`` on one image input or a list of them (paths, PIL images, arrays,
    tensors), each decoded under ``timings.load``: the ``__call__`` of :class:`OnnxPipeline` and
    of :class:`~acfd.predict.detector.Detector`. One :class:`Detections` for one input, a list for a list."""
    batch = is_batch(images)
    items = list(images) if batch else [images]
    arrays, sources = [], []
    for item in items:
        with detector.timed("load"):
            arrays.append(as_rgb_array(item, bgr=bgr))
        sources.append(str(item) if isinstance(item, (str, os.PathLike)) else None)
    dets = detector.detect_arrays(arrays, sources)
    return dets if batch else dets[0]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` IoU of two sets of boxes (x1, y1, x2, y2), as ``torchvision.ops.box_iou``."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def view_agreement_scores(boxes: np.ndarray, scores: np.ndarray, per_view: Sequence[tuple[np.ndarray, np.ndarray]],
                          iou_thresh: float, weight: float = 0.5) -> np.ndarray:
    """Merged boxes rescored by how consistently the views found them
    (:func:`acfd.detection.postprocess.view_agreement_scores`, whose docstring says why)."""
    if len(boxes) == 0 or not per_view:
        return scores
    agreement = np.zeros_like(scores)
    for view_boxes, view_scores in per_view:
        if len(view_scores) == 0:
            continue
        overlapping = box_iou(boxes, view_boxes.reshape(-1, 4).astype(np.float32)) >= iou_thresh
        agreement += np.where(overlapping, view_scores[None].astype(np.float32), np.float32(0)).max(axis=1)
    return ((1.0 - weight) * scores + weight * agreement / len(per_view)).astype(np.float32)


class OnnxPipeline:
    """Detect faces with an exported detector (and verifier).

    Build it with :meth:`open` (from files) or :func:`open_pipeline` (from ``Detector``'s
    arguments); ``Detector`` builds one from its own sessions.

    Args:
        runner: the detector graph in ONNX Runtime.
        cfg: the network's config (anchors, box coder, normalisation, size divisor).
        preset: the settings.
        calibration: the score calibration, or ``None`` for raw scores.
        verifier: the verifier's stage graph in ONNX Runtime, or ``None``.
        max_det: keep at most this many boxes per image.
        topk: keep at most this many boxes before NMS.
        batch_size: largest batch sent to the network.
        timings: where the step times add up (a new :class:`Timings` when ``None``).
    """

    def __init__(self, runner: OnnxRunner, cfg: ModelConfig, preset: Preset, calibration: ScoreCalibration | None,
                 verifier: VerifierSession | None, max_det: int = PAPER_MAX_DET, topk: int = PAPER_TOPK,
                 batch_size: int = 16, timings: Timings | None = None) -> None:
        scales = parse_scales(preset.scales)
        self.runner, self.cfg, self.preset = runner, cfg, preset
        self.path = runner.path
        self.calibration, self.verifier = calibration, verifier
        self.scales = scales
        #: the ``(scale, mirrored)`` network passes, in run order (as ``Detector``)
        self.views = [(scale, mirrored) for scale in scales
                      for mirrored in ((False, True) if preset.flip and scale.flip else (False,))]
        self.agreement_iou = preset.agreement_iou
        self.verifier_max_boxes = preset.verifier_max_boxes
        self.score_thresh = float(preset.score_thresh)
        self.nms_thresh = float(preset.nms_thresh)
        self.raw_score_floor = preset.raw_score_floor
        self.max_det, self.topk, self.batch_size = int(max_det), int(topk), int(batch_size)
        self._mean = np.asarray(cfg.pixel_mean, dtype=np.float32)
        self._inv_std = 1.0 / np.asarray(cfg.pixel_std, dtype=np.float32)
        # (3, 256): each channel's normalised value of every uint8 level, the same float32 arithmetic
        # as (pixel - mean) * inv_std, looked up 3-4x faster than computed per pixel
        self._levels = ((np.arange(256, dtype=np.float32)[:, None] - self._mean) * self._inv_std).T.copy()
        self._anchors: dict[tuple[int, int], np.ndarray] = {}
        self._upscale_warned: set[str] = set()
        self.timings = Timings() if timings is None else timings
        self._workers: ImageWorkers | None = None
        self._workers_lock = threading.Lock()

    @classmethod
    def open(cls, graph: str | os.PathLike[str], verifier: str | os.PathLike[str] | None = None,
             preset: str | Preset = "interactive", overrides: Mapping[str, Any] | None = None,
             calibration: bool = True, threads: int | None = None, presets_beside: Path | None = None,
             **kwargs: Any) -> OnnxPipeline:
        """A pipeline of exported files.

        Args:
            graph: the exported detector (``acfd export``), with its model config, calibration
                and presets in its metadata.
            verifier: the verifier's stage graph, or ``None``.
            preset: a preset name of the graph (its metadata, else the presets file beside
                ``presets_beside``) or a :class:`Preset`.
            overrides: settings that replace the preset's (``scales``, ``score_thresh``,
                ``nms_thresh``, ``flip``, ``agreement_iou``, ``raw_score_floor``), as ``Detector``'s.
            calibration: ``True``: the calibration in the graph's metadata (if any); ``False``: raw scores.
            threads: intra-op threads of both networks (``None``: :func:`~acfd.utils.default_threads`).
            presets_beside: the weights file whose ``NAME-presets.json`` holds the presets when
                the graph's metadata has none.
            **kwargs: ``max_det``, ``topk``, ``batch_size``.

        Raises:
            ValueError: an unreadable graph, one without a model config, an unknown preset, a
                verifier fitted for the other kind of scores.
        """
        threads = default_threads() if threads is None else int(threads)
        runner = OnnxRunner(graph, providers=["CPUExecutionProvider"], num_threads=threads)
        cfg = runner.model_config()
        if cfg is None:
            raise ValueError(f"{graph}: no acfd model config in the ONNX metadata (export it with acfd export)")
        if isinstance(preset, str):
            presets = read_presets(runner.metadata, None if PRESETS_KEY in runner.metadata else presets_beside)
            if preset not in presets:
                raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(presets)}")
            preset = presets[preset]
        changes = dict(overrides or {})
        if changes.get("scales") is not None:
            changes["scales"] = tuple(str(s) for s in parse_scales(changes["scales"]))
        stored = ScoreCalibration.from_metadata(runner.metadata, str(graph)) if calibration else None
        stage = VerifierSession(verifier, threads) if verifier is not None else None
        if stage is not None and stage.stacking.calibrated != (stored is not None):
            raise ValueError(f"{verifier}: it combines {'calibrated' if stage.stacking.calibrated else 'raw'} "
                             "detector scores, but this detector's are not")
        return cls(runner, cfg, preset.override(**changes), stored, stage, **kwargs)

    @property
    def metadata(self) -> dict[str, str]:
        """The detector graph's metadata."""
        return self.runner.metadata

    @property
    def threads(self) -> int | None:
        """The detector session's intra-op threads."""
        return self.runner.num_threads

    @property
    def parallel_images(self) -> int:
        """How many images :meth:`detect_arrays` runs at once when given several: one per thread
        of the session (:mod:`acfd.predict.parallel`), 1 for a single-threaded one."""
        return max(1, int(self.threads or default_threads()))

    def image_workers(self) -> ImageWorkers | None:
        """The workers that run :attr:`parallel_images` images at once (made on first use), or
        None for a single-threaded pipeline."""
        with self._workers_lock:
            if self._workers is None and self.parallel_images > 1:
                self._workers = ImageWorkers(self, self.parallel_images)
        return self._workers

    def with_threads(self, num_threads: int) -> OnnxPipeline:
        """A copy with sessions of its own, ``num_threads`` intra-op threads each, and its own timings."""
        return type(self)(self.runner.with_threads(num_threads), self.cfg, self.preset, self.calibration,
                          self.verifier.with_threads(num_threads) if self.verifier is not None else None,
                          max_det=self.max_det, topk=self.topk, batch_size=self.batch_size)

    def __repr__(self) -> str:
        return (f"OnnxPipeline(model={self.cfg.name!r}, graph={str(self.path)!r}, scales={[str(v) for v in self.scales]}, "
                f"score_thresh={self.score_thresh}, nms_thresh={self.nms_thresh}, threads={self.threads}, "
                f"calibrated={self.calibration is not None}, verifier={self.verifier is not None})")

    @property
    def backend_name(self) -> str:
        return "onnx"

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Add the time the block takes to :attr:`timings` ``.step``."""
        with self.timings.timed(step):
            yield

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        d = int(self.cfg.size_divisor)
        return math.ceil(height / d) * d, math.ceil(width / d) * d

    def _raw_floor(self) -> float:
        """As ``Detector._raw_floor``: the raw score below which nothing can end above the threshold."""
        if self.verifier is not None:
            derived = self.verifier.stacking.raw_score_floor
        elif self.calibration is not None:
            derived = self.calibration.raw_score_floor(self.score_thresh)
        else:
            derived = self.score_thresh
        return derived if self.raw_score_floor is None else max(derived, self.raw_score_floor)

    def _anchors_for(self, height: int, width: int) -> np.ndarray:
        if (height, width) not in self._anchors:
            anchors = self.cfg.anchors
            self._anchors[(height, width)] = grid_anchors(anchors.strides, anchors.scale, height, width)
        return self._anchors[(height, width)]

    def _view(self, images: Sequence[np.ndarray], scale: Scale, mirrored: bool,
              single: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One view of images of one padded size: boxes (original pixels) and raw scores per image,
        scores descending (after NMS when it is the only view), and each image resized to the
        network input (the verifier may crop from it)."""
        with self.timed("preprocess"):
            views = [np.ascontiguousarray(im[:, ::-1]) if mirrored else im for im in images]
            sizes = [scale.target_size(*im.shape[:2]) for im in views]
            ph = max(self.padded_size(h, w)[0] for h, w in sizes)
            pw = max(self.padded_size(h, w)[1] for h, w in sizes)
            batch = np.zeros((len(views), 3, ph, pw), dtype=np.float32)  # zeros = the mean colour
            resized = [resize(im, size) for im, size in zip(views, sizes)]
            for i, (small, (h, w)) in enumerate(zip(resized, sizes)):
                for c in range(3):
                    np.take(self._levels[c], small[..., c], out=batch[i, c, :h, :w])
        with self.timed("forward"):
            cls_logits, box_deltas = self.runner(batch)
        with self.timed("postprocess"):
            anchors = self._anchors_for(ph, pw)
            if cls_logits.shape[-1] != len(anchors):
                raise RuntimeError(f"{self.path}: the network returned {cls_logits.shape[-1]} predictions for a "
                                   f"{ph}x{pw} input but there are {len(anchors)} anchors")
            logits = np.clip(cls_logits.reshape(len(views), -1).astype(np.float32), -80.0, 80.0)  # no exp overflow
            scores_all = 1.0 / (1.0 + np.exp(-logits))
            floor = self._raw_floor()
            coder = self.cfg.box_coder
            out = []
            for i, ((h, w), im) in enumerate(zip(sizes, views)):
                scores = scores_all[i]
                idx = np.flatnonzero(scores > floor)
                if idx.size > self.topk:
                    idx = idx[np.argsort(-scores[idx], kind="stable")[: self.topk]]
                boxes = decode_boxes(box_deltas[i, idx], anchors[idx], coder.weights, math.log(1000.0 / 16))
                boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
                boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
                sc = scores[idx]
                valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
                boxes, sc = boxes[valid], sc[valid]
                # one view: NMS here; several: all their boxes go to the merge's NMS
                kept = nms(boxes, sc, self.nms_thresh, self.max_det) if single else np.argsort(-sc, kind="stable")
                boxes, sc = boxes[kept], sc[kept]
                if scale.max_box is not None:
                    side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
                    boxes, sc = boxes[side < scale.max_box], sc[side < scale.max_box]
                oh, ow = im.shape[:2]
                boxes[:, 0::2] = (boxes[:, 0::2] * np.float32(ow / w)).clip(0, ow)
                boxes[:, 1::2] = (boxes[:, 1::2] * np.float32(oh / h)).clip(0, oh)
                if mirrored:
                    boxes = np.stack([ow - boxes[:, 2], boxes[:, 1], ow - boxes[:, 0], boxes[:, 3]], axis=1)
                out.append((boxes, sc.astype(np.float32), resized[i]))
        return out

    def _merge(self, per_view: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """One image's views merged: NMS over all their boxes, view agreement, the top ``max_det``
        (as :func:`acfd.detection.postprocess.merge_multiscale`)."""
        with self.timed("postprocess"):
            boxes = np.concatenate([b for b, _ in per_view]).astype(np.float32)
            scores = np.concatenate([s for _, s in per_view]).astype(np.float32)
            kept = nms(boxes, scores, self.nms_thresh)
            boxes, scores = boxes[kept], scores[kept]
            if self.agreement_iou is not None:
                scores = view_agreement_scores(boxes, scores, per_view, float(self.agreement_iou))
                order = np.argsort(-scores, kind="stable")
                boxes, scores = boxes[order], scores[order]
        return boxes[: self.max_det], scores[: self.max_det]

    def _finalise(self, boxes: np.ndarray, scores: np.ndarray, image: np.ndarray,
                  resized: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated, then verified scores and boxes, then the threshold (as ``Detector._finalise``)."""
        if self.calibration is None and self.verifier is None:
            return boxes, scores
        if self.calibration is not None:
            with self.timed("postprocess"):
                factor = Scale.parse(self.calibration.reference_scale).length_factor(*image.shape[:2])
                scores = self.calibration.calibrate(scores, boxes * np.float32(factor))
        if self.verifier is not None:
            with self.timed("verify"):
                boxes, scores = self.verifier(image, boxes, scores, score_thresh=self.score_thresh, resized=resized,
                                              max_boxes=self.verifier_max_boxes)
        keep = scores > self.score_thresh
        return boxes[keep], scores[keep]

    def detect_arrays(self, images: Sequence[np.ndarray], sources: Sequence[str | None] | None = None,
                      batch_size: int | None = None) -> list[Detections]:
        """Detect faces in RGB uint8 arrays: each view, the images of one padded size through the
        network together; then per image the merge, calibration, verifier and threshold. Several
        images run :attr:`parallel_images` at a time (:mod:`acfd.predict.parallel`)."""
        sources = list(sources) if sources is not None else [None] * len(images)
        workers = self.image_workers() if len(images) > 1 else None
        if workers is not None:
            return workers.detect_arrays(images, sources, batch_size)
        step = self.batch_size if batch_size is None else max(1, int(batch_size))
        per_image: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in images]
        crop_source: list[np.ndarray | None] = [None] * len(images)
        single = len(self.views) == 1
        for scale, mirrored in self.views:
            groups: dict[tuple[int, int], list[int]] = {}
            for i, im in enumerate(images):
                warn_upscale(scale, *im.shape[:2], self._upscale_warned)
                groups.setdefault(self.padded_size(*scale.target_size(*im.shape[:2])), []).append(i)
            for idxs in groups.values():
                for start in range(0, len(idxs), step):
                    chunk = idxs[start:start + step]
                    for i, (boxes, scores, resized) in zip(chunk, self._view([images[i] for i in chunk], scale, mirrored, single)):
                        per_image[i].append((boxes, scores))
                        if not mirrored and crop_source[i] is None:
                            crop_source[i] = resized
                    self.timings.batches += 1
        out = []
        for im, src, views, resized in zip(images, sources, per_image, crop_source):
            boxes, scores = views[0] if single else self._merge(views)
            boxes, scores = self._finalise(boxes, scores, im, resized)
            order = np.argsort(-scores, kind="stable")
            out.append(Detections(boxes[order], scores[order], tuple(im.shape[:2]), source=src))
        self.timings.images += len(images)
        return out

    def __call__(self, images: ImageInput | Sequence[ImageInput], *, bgr: bool = False) -> Detections | list[Detections]:
        """Detect faces in one image or a list of them (as :meth:`Detector.__call__`)."""
        return detect_inputs(self, images, bgr)

    def detect_paths(self, paths: Iterable[str | os.PathLike[str]], batch_size: int = 1,
                     progress: bool = True) -> Iterator[tuple[Path, Detections | Exception]]:
        """As :meth:`Detector.detect_paths`."""
        from acfd.predict.streams import detect_files

        return detect_files(self, paths, batch_size=batch_size, progress=progress)  # type: ignore[arg-type]

    def detect_video_frames(self, path: str | os.PathLike[str], every: int = 1,
                            batch_size: int = 1) -> Iterator[tuple[np.ndarray, Detections]]:
        """As :meth:`Detector.detect_video_frames`."""
        from acfd.predict.streams import detect_frames

        return detect_frames(self, path, every=every, batch_size=batch_size)  # type: ignore[arg-type]


def open_pipeline(model: str | os.PathLike[str] | None = None, weights: Any = None, device: str = "cpu",
                  half: bool = False, preset: str = "interactive", scales: Any = None,
                  score_thresh: float | None = None, nms_thresh: float | None = None, flip: bool | None = None,
                  agreement_iou: Any = FROM_PRESET, raw_score_floor: Any = FROM_PRESET,
                  verifier_max_boxes: Any = FROM_PRESET,
                  calibration: Any = "auto", verifier: Any = "auto", threads: int | None = None,
                  batch_size: int = 16, precision: str = "auto", **ignored: Any) -> OnnxPipeline | None:
    """An :class:`OnnxPipeline` for :class:`~acfd.predict.detector.Detector` arguments when they
    allow one, else ``None`` (the caller builds a ``Detector``; nothing is wrong).

    It needs: the CPU in float32; the shipped model (``model`` ``None`` or its name, no
    ``weights``) whose exported graphs ship with the package and were exported from the very
    weights file beside them, or an ``.onnx`` export with no ``verifier`` asked for beyond the
    stage graph beside it; ONNX Runtime installed; ``calibration`` and ``verifier`` ``"auto"`` or ``None``.
    ``precision`` (:mod:`acfd.deploy.precision`) picks the shipped model's float32 or int8 graph; an
    ``.onnx`` export runs as it is, with the stage graph of the float32 graph it was made from
    (``acfd-n-verifier.onnx`` for ``acfd-n.onnx`` and ``acfd-n-int8.onnx``).
    """
    check_precision(precision)
    if str(device) != "cpu" or half or weights is not None or importlib.util.find_spec("onnxruntime") is None:
        return None
    if not all(value in ("auto", None) for value in (calibration, verifier) if isinstance(value, (str, type(None)))):
        return None
    if not isinstance(calibration, (str, type(None))) or not isinstance(verifier, (str, type(None))):
        return None
    if model is None or str(model) == SHIPPED_DETECTOR:
        graph, stage = shipped_graphs()
        if resolve_precision(precision) == "int8" and int8_graph_path(graph).is_file():
            graph = int8_graph_path(graph)
        elif precision == "int8":
            return None  # Detector says what is missing
        weights_file = WEIGHTS_DIR / f"{SHIPPED_DETECTOR}.safetensors"
        if not (graph.is_file() and stage.is_file() and weights_file.is_file()):
            return None
        presets_source: Path | None = weights_file
    elif str(model).lower().endswith(".onnx") and Path(model).is_file():
        graph, weights_file = Path(model), None
        stage = graph.with_name(float_graph_stem(graph) + "-verifier.onnx")
        presets_source = None
    else:
        return None
    overrides = {"scales": scales, "score_thresh": score_thresh, "nms_thresh": nms_thresh, "flip": flip,
                 "agreement_iou": agreement_iou, "raw_score_floor": raw_score_floor,
                 "verifier_max_boxes": verifier_max_boxes}
    try:
        pipeline = OnnxPipeline.open(graph, stage if verifier == "auto" and stage.is_file() else None, preset, overrides,
                                     calibration=calibration == "auto", threads=threads, batch_size=batch_size,
                                     presets_beside=presets_source)
    except ValueError as exc:  # a bad setting...: Detector says what is wrong, in its words
        logger.debug("not the ONNX pipeline: %s", exc)
        return None
    fingerprint = pipeline.metadata.get(SOURCE_KEY, "")
    if weights_file is not None and fingerprint != file_sha256(weights_file)[:16]:
        logger.debug("%s was not exported from %s: using Detector", graph, weights_file)
        return None
    if pipeline.verifier is not None and pipeline.verifier.detector != fingerprint:
        logger.debug("%s was fitted for other weights than %s: using Detector", stage, graph)
        return None
    return pipeline


__all__ = ["OnnxPipeline", "decode_boxes", "default_threads", "grid_anchors", "nms", "open_pipeline", "shipped_graphs"]
