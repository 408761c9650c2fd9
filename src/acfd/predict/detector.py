"""The Python API: :class:`Detector` turns images into :class:`~acfd.predict.results.Detections`.

Inference follows the paper (4.1 "Inference"): each image is resized to every test scale, each
scale keeps its top ``topk`` (1000) boxes with a score above the threshold, the boxes are mapped back
to the original pixels, and all scales are merged by NMS, keeping the top ``max_det`` (100). The
settings come from a preset of the weights file (:mod:`acfd.predict.presets`): ``Detector()`` uses
its ``interactive`` preset, ``Detector.for_evaluation()`` its ``evaluation`` preset, and any setting
can be given to change it. Scores are calibrated when the weights carry a calibration
(:mod:`acfd.detection.calibration`) and re-scored by their verifier when one is beside them
(:mod:`acfd.detection.verifier`).

The path of an image: :func:`~acfd.predict.inputs.as_rgb_array` -> for each view (scale, mirrored
or not) :meth:`Detector.preprocess` (resize, normalise, pad, batch) -> :meth:`Detector.forward` (the
network: PyTorch, ONNX Runtime or any ``backend`` callable with the same raw-tensor contract) ->
:meth:`Detector.postprocess` (score floor, top-k, decode, NMS, back to original pixels) -> the
views merged by NMS (and view agreement) -> calibrated -> verified -> ``score_thresh``. Each step is
timed (:attr:`Detector.timings`).

Example::

    from acfd import Detector

    det = Detector()                      # the shipped default weights
    faces = det("page.png")               # Detections
    for box, score in zip(faces.boxes, faces.scores):
        print(box, score)
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.ops import box_area
from torchvision.transforms.v2 import functional as F

from acfd.config import ModelConfig
from acfd.deploy.onnx_runner import OnnxRunner
from acfd.deploy.precision import check_precision
from acfd.detection.calibration import ScoreCalibration
from acfd.detection.postprocess import merge_multiscale, postprocess_detections
from acfd.detection.protocol import PAPER_MAX_DET, PAPER_TOPK
from acfd.detection.verifier import BoxVerifier
from acfd.models.registry import list_models
from acfd.predict.backends import (
    BACKENDS,
    Backend,
    backend_name,
    network_without_file,
    onnx_backend,
    place_verifier,
)
from acfd.predict.inputs import ImageInput, resize
from acfd.predict.modelfile import ModelFile, check_verifier_scores
from acfd.predict.onnx_pipeline import OnnxPipeline, detect_inputs, warn_upscale
from acfd.predict.parallel import ImageWorkers
from acfd.predict.presets import (
    FROM_PRESET,
    GENERIC_PRESETS,
    PAPER_PRESET,
    PRESET_NAMES,
    Preset,
)
from acfd.predict.results import Detections, PreparedBatch, Timings
from acfd.predict.scales import Scale, parse_scales
from acfd.predict.streams import detect_files, detect_frames
from acfd.utils import default_threads, resolve_device

logger = logging.getLogger(__name__)

def _mirror_boxes(result: dict[str, torch.Tensor], image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Boxes found on a horizontally mirrored ``(height, width)`` image, in the original's pixels."""
    boxes = F.horizontal_flip_bounding_boxes(result["boxes"], format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=image_size)
    return {**result, "boxes": boxes}


def _check_counts(max_det: int, topk: int, batch_size: int) -> None:
    """One-line ``ValueError`` for counts below 1 (checked before the model loads)."""
    for name, value in (("max_det", max_det), ("topk", topk), ("batch_size", batch_size)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


class Detector:
    """Find cartoon faces in images.

    Args:
        model: a variant name (``"acfd-n"``: its shipped weights; others need ``weights``, or get
            random weights and a warning), a weights/checkpoint file, an exported ``.onnx`` file (run by ONNX Runtime),
            an ``ACFD`` module, or ``None`` for the shipped default model. With a ``backend`` a
            name or a ``ModelConfig`` is enough (or nothing when the backend has a
            ``model_config`` attribute).
        weights: weights for a model given by name.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        scales: test scales (see :func:`~acfd.predict.scales.parse_scales`).
        score_thresh: keep boxes whose reported score is above this.
        nms_thresh: NMS IoU threshold (across scales and views when there are several).
        max_det: keep at most this many boxes per image.
        topk: per scale, keep at most this many boxes before NMS.
        half: run the network in float16 (CUDA only; ignored with a warning on CPU).
        backend: which engine runs the network (:mod:`acfd.predict.backends`). ``"auto"``
            (default): ONNX Runtime on CPU when it is installed and the weights come from a file,
            else PyTorch; ``"torch"``; ``"onnx"`` (ONNX Runtime, error if unavailable); or a
            callable ``runner(images (B, 3, H, W) float32 numpy) -> (cls_logits (B, A),
            box_deltas (B, A, 4))``, for which ``model`` only supplies the config, anchors and box
            coder (a name is enough).
        batch_size: largest batch sent to the network by :meth:`__call__`.
        flip: test-time augmentation: run every scale on the mirrored image too and merge its
            boxes (mirrored back) with the others by the same NMS; twice the network time.
        agreement_iou: with several scales or views, rescore each merged box by how many views
            found it at IoU >= this (:func:`acfd.detection.postprocess.view_agreement_scores`);
            ``None`` keeps the NMS scores (the paper).
        calibration: ``"auto"`` (default): the size-aware score calibration stored with the
            weights (``acfd calibrate``; the shipped model has one), if any; ``None``: the
            network's raw scores; or a :class:`~acfd.detection.calibration.ScoreCalibration`.
            The final boxes' scores are calibrated after NMS and the merge (which rank by the
            raw scores), and ``score_thresh`` applies to the calibrated scores.
        raw_score_floor: never consider a box whose raw network score is at or below this (the
            paper's protocol: 0.08); ``None``: only ``score_thresh`` decides.
        verifier_max_boxes: the verifier crops at most this many boxes of an image (its best; the
            others get the verifier's ``unverified_logit``); ``None`` or 0: no limit. The shipped
            evaluation preset sets 20 (:class:`~acfd.predict.presets.Preset`).
        verifier: the second-stage face verifier, which re-scores and refines every final box
            from a crop around it. ``"auto"`` (default): the one beside the weights file, if it
            was fitted for that very file (the shipped model has one) and for its scores
            (calibrated or not) (:meth:`ModelFile.find_verifier`); ``None``: none; a path to a
            verifier file; or a :class:`~acfd.detection.verifier.BoxVerifier`. With a verifier
            every box above its stacking's raw floor is verified and ``score_thresh`` applies to
            the verified scores.
        threads: CPU threads of the ONNX Runtime sessions; given, also PyTorch's on the CPU
            (``torch.set_num_threads``, process-wide). ``None``: the cores this process may run on
            (:func:`acfd.utils.default_threads`) for ONNX Runtime, PyTorch's own setting.
        precision: the ONNX Runtime network's numbers on the CPU (:mod:`acfd.deploy.precision`):
            ``"auto"`` (default): the int8 graph beside the weights (the shipped model has one) on
            CPUs with int8 dot products (VNNI, AMX), else float32; ``"float32"``; ``"int8"`` (an
            error when there is no int8 graph). The verifier stays float32. An ``.onnx`` model
            runs in its own precision.
        preset: where the settings above come from when they are not given: a preset name
            (``"interactive"``, the default; ``"evaluation"``; ``"paper"``) of the weights file
            (:attr:`ModelFile.presets`; generic ones for weights without presets), or a
            :class:`~acfd.predict.presets.Preset`.

    Raises:
        FileNotFoundError: ``Detector()`` when no default weights are shipped, or a missing file.
        ValueError: a setting out of range (``score_thresh`` outside [0, 1], ``nms_thresh``
            or ``agreement_iou`` outside (0, 1], ``max_det``/``topk``/``batch_size`` < 1), an
            unknown preset, backend or device, weights of another variant.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | torch.nn.Module | ModelConfig | None = None,
        weights: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        scales: str | Iterable[str | int | Sequence[int] | Scale] | None = None,
        score_thresh: float | None = None,
        nms_thresh: float | None = None,
        max_det: int = PAPER_MAX_DET,
        topk: int = PAPER_TOPK,
        half: bool = False,
        backend: Backend | str | None = "auto",
        batch_size: int = 16,
        flip: bool | None = None,
        agreement_iou: Any = FROM_PRESET,
        calibration: ScoreCalibration | str | None = "auto",
        raw_score_floor: Any = FROM_PRESET,
        verifier_max_boxes: Any = FROM_PRESET,
        verifier: BoxVerifier | str | os.PathLike[str] | None = "auto",
        *,
        threads: int | None = None,
        precision: str = "auto",
        preset: str | Preset = "interactive",
    ) -> None:
        _check_counts(max_det, topk, batch_size)
        check_precision(precision)
        if threads is not None and int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = default_threads() if threads is None else int(threads)
        if threads is not None and str(device).startswith("cpu"):
            torch.set_num_threads(self.threads)
        if isinstance(preset, str) and preset not in PRESET_NAMES:
            raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESET_NAMES)}")
        overrides = dict(scales=None if scales is None else tuple(str(s) for s in parse_scales(scales)),
                         score_thresh=score_thresh, nms_thresh=nms_thresh, flip=flip,
                         agreement_iou=agreement_iou, raw_score_floor=raw_score_floor,
                         verifier_max_boxes=verifier_max_boxes)
        GENERIC_PRESETS["interactive"].override(**overrides)  # range errors before anything loads
        self.device = resolve_device(device)
        choice = "torch" if backend is None else backend
        if isinstance(choice, str) and choice not in BACKENDS:
            raise ValueError(f"unknown backend {choice!r}; use one of {', '.join(BACKENDS)} or a callable")
        runner: Backend | None = None if isinstance(choice, str) else choice
        if isinstance(calibration, str) and calibration != "auto":
            raise ValueError(f"calibration must be 'auto', None or a ScoreCalibration, got {calibration!r}")

        # the weights file and what travels with it
        self.model_file: ModelFile | None = None
        if isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(".onnx"):
            if weights is not None or choice == "torch" or runner is not None:
                raise ValueError(f"{model}: an .onnx file runs in ONNX Runtime; give no weights= or backend=")
            self.model_file = ModelFile.open(model, providers=None if self.device.type == "cuda" else ["CPUExecutionProvider"],
                                             num_threads=self.threads)
            runner = self.model_file.runner
        elif runner is not None and weights is None and model in list_models():
            # a backend brings the network: the variant only gives the anchors and the box coder
            self.model_file = ModelFile.variant(model)
        elif isinstance(model, (str, os.PathLike)) or (model is None and (runner is None or weights is not None)):
            self.model_file = ModelFile.open(model, weights)
        presets = self.model_file.presets if self.model_file is not None else {**GENERIC_PRESETS, "paper": PAPER_PRESET}
        self.preset: Preset = (preset if isinstance(preset, Preset) else presets[preset]).override(**overrides)

        if self.model_file is not None:
            self.model = self.model_file.load_network(self.device, warn_random=runner is None)
        else:
            self.model = network_without_file(model, weights, self.device, runner)
        self.backend = runner
        stored = self.model_file.calibration if self.model_file is not None else None
        self.calibration = stored if calibration == "auto" else calibration
        calibrated = self.calibration is not None
        if verifier is None:
            self.verifier: BoxVerifier | None = None
        elif isinstance(verifier, str) and verifier == "auto":
            self.verifier = self.model_file.find_verifier(calibrated) if self.model_file is not None else None
        elif self.model_file is not None:
            self.verifier = self.model_file.check_verifier(verifier, calibrated)
        else:
            self.verifier = check_verifier_scores(verifier, calibrated)
        if runner is None and choice in ("auto", "onnx"):
            self.backend = onnx_backend(choice, self.model, self.model_file, self.device, half, self.threads, precision)
        elif precision == "int8" and not isinstance(runner, OnnxRunner):
            raise ValueError("precision='int8' needs the ONNX Runtime backend on the CPU (backend 'auto' or 'onnx')")
        if self.verifier is not None:
            place_verifier(self.verifier, self.backend, self.device, self.threads)

        self.cfg = self.model.cfg
        self.box_coder = self.model.box_coder
        self.scales = parse_scales(self.preset.scales)
        self.score_thresh = float(self.preset.score_thresh)
        self.raw_score_floor = self.preset.raw_score_floor
        self.verifier_max_boxes = self.preset.verifier_max_boxes
        self.nms_thresh = float(self.preset.nms_thresh)
        self.flip = self.preset.flip
        self.agreement_iou = self.preset.agreement_iou
        self.max_det = int(max_det)
        self.topk = int(topk)
        self.batch_size = int(batch_size)
        if half and self.device.type != "cuda":
            logger.warning("half precision needs a CUDA device; running in float32 on %s", self.device)
            half = False
        self.half = bool(half)
        if self.half and self.backend is None:
            self.model.half()
        self.size_divisor = int(self.cfg.size_divisor)
        self._mean = torch.tensor(self.cfg.pixel_mean, dtype=torch.float32, device=self.device).view(3, 1, 1)
        self._std = torch.tensor(self.cfg.pixel_std, dtype=torch.float32, device=self.device).view(3, 1, 1)
        self._mean_hwc = np.asarray(self.cfg.pixel_mean, dtype=np.float32)  # CPU pre-processing
        self._inv_std_hwc = 1.0 / np.asarray(self.cfg.pixel_std, dtype=np.float32)
        self._anchors: dict[tuple[int, int], torch.Tensor] = {}
        self._upscale_warned: set[str] = set()
        self.timings = Timings()
        self.pipeline = self._onnx_pipeline()

    def _onnx_pipeline(self) -> OnnxPipeline | None:
        """The NumPy pipeline over this detector's own ONNX Runtime sessions on the CPU
        (:mod:`acfd.predict.onnx_pipeline`: the same boxes, a cheaper post-processing), else ``None``."""
        on_ort = isinstance(self.backend, OnnxRunner) and self.device.type == "cpu" and not self.half
        verifier_on_ort = self.verifier is None or self.verifier.session is not None
        if not (on_ort and verifier_on_ort):
            return None
        return OnnxPipeline(self.backend, self.cfg, self.preset, self.calibration,  # type: ignore[arg-type]
                            self.verifier.session if self.verifier is not None else None,
                            max_det=self.max_det, topk=self.topk, batch_size=self.batch_size, timings=self.timings)

    @property
    def precision(self) -> str:
        """The network's numbers: ``"int8"``, ``"float16"`` or ``"float32"``."""
        if isinstance(self.backend, OnnxRunner):
            return self.backend.precision
        return "float16" if self.half else "float32"

    @property
    def backend_name(self) -> str:
        """``"torch"``, ``"onnx"`` (ONNX Runtime) or the class name of a custom backend."""
        return backend_name(self.backend)

    @property
    def parallel_images(self) -> int:
        """How many images :meth:`detect_arrays` runs at once when given several: one per thread
        on the CPU's ONNX Runtime pipeline (:mod:`acfd.predict.parallel`), else 1."""
        return self.pipeline.parallel_images if self.pipeline is not None else 1

    def image_workers(self) -> ImageWorkers | None:
        """The CPU pipeline's image workers (:meth:`OnnxPipeline.image_workers`), or None."""
        return self.pipeline.image_workers() if self.pipeline is not None else None

    @classmethod
    def for_evaluation(
        cls,
        model: str | os.PathLike[str] | torch.nn.Module | None = None,
        weights: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> Detector:
        """A detector with the weights' ``evaluation`` preset, for AP and submissions: every box
        above the raw-score floor (the paper's 0.08) with every calibrated score kept (AP needs the
        low-score tail), top 1,000 per scale and view, top 100 per image; for the shipped model the
        scales, flip, NMS and view agreement chosen on the dev split.

        Args:
            model: as for :class:`Detector`.
            weights: as for :class:`Detector`.
            **kwargs: any other :class:`Detector` argument (``scales="paper"``...).
        """
        kwargs.setdefault("preset", "evaluation")
        return cls(model, weights, **kwargs)

    def __repr__(self) -> str:
        return (
            f"Detector(model={self.cfg.name!r}, device={str(self.device)!r}, "
            f"scales={[str(s) for s in self.scales]}, score_thresh={self.score_thresh}, "
            f"raw_score_floor={self.raw_score_floor}, calibrated={self.calibration is not None}, "
            f"nms_thresh={self.nms_thresh}, max_det={self.max_det}, flip={self.flip}, agreement_iou={self.agreement_iou}"
            f", backend={self.backend_name!r}, precision={self.precision!r}, verifier={self.verifier is not None})"
        )

    # -- timing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Add the time the block takes to :attr:`timings` ``.step`` (CUDA synchronised at its end)."""
        sync = (lambda: torch.cuda.synchronize(self.device)) if self.device.type == "cuda" else None
        with self.timings.timed(step, sync):
            yield

    # -- the three steps ------------------------------------------------------------------

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` rounded up to the network's size divisor (128)."""
        d = self.size_divisor
        return math.ceil(height / d) * d, math.ceil(width / d) * d

    def preprocess(self, images: Sequence[np.ndarray], scale: Scale) -> PreparedBatch:
        """Resize RGB uint8 images to ``scale``, normalise, pad bottom/right and stack them.

        Args:
            images: ``(H, W, 3)`` uint8 RGB arrays.
            scale: the test scale.
        """
        with self.timed("preprocess"):
            sizes = [scale.target_size(*im.shape[:2]) for im in images]
            ph = max(self.padded_size(h, w)[0] for h, w in sizes)
            pw = max(self.padded_size(h, w)[1] for h, w in sizes)
            # Zeros after normalisation = the mean colour, as the model's own padding.
            if self.device.type == "cpu":
                # NumPy on HWC, then one transposing copy: several times faster than torch's
                # elementwise ops on small CPU tensors (and no thread-pool start per call).
                out = np.zeros((len(images), 3, ph, pw), dtype=np.float32)
                for i, (im, (h, w)) in enumerate(zip(images, sizes)):
                    hwc = (resize(im, (h, w)).astype(np.float32) - self._mean_hwc) * self._inv_std_hwc
                    out[i, :, :h, :w] = hwc.transpose(2, 0, 1)
                batch = torch.from_numpy(out)
            else:  # upload uint8, normalise on the GPU
                batch = torch.zeros((len(images), 3, ph, pw), dtype=torch.float32, device=self.device)
                for i, (im, (h, w)) in enumerate(zip(images, sizes)):
                    arr = np.ascontiguousarray(resize(im, (h, w)))
                    if not arr.flags.writeable:
                        arr = arr.copy()
                    chw = torch.from_numpy(arr).to(self.device, non_blocking=True).permute(2, 0, 1).float()
                    batch[i, :, :h, :w] = (chw - self._mean) / self._std
            if self.half:
                batch = batch.half()
        return PreparedBatch(batch, sizes, [tuple(im.shape[:2]) for im in images], scale)

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the network (or the backend) on a normalised ``(B, 3, H, W)`` batch.

        Args:
            batch: :attr:`PreparedBatch.tensor`.

        Returns:
            ``cls_logits (B, A)`` and ``box_deltas (B, A, 4)`` as float32 tensors on the device.
        """
        with self.timed("forward"):
            if self.backend is not None:
                out = self.backend(batch.float().cpu().numpy())
                cls_logits, box_deltas = (torch.as_tensor(np.asarray(o)) for o in tuple(out)[:2])
                cls_logits, box_deltas = cls_logits.to(self.device), box_deltas.to(self.device)
            else:
                with torch.inference_mode():
                    cls_logits, box_deltas = self.model(batch)
            cls_logits, box_deltas = cls_logits.float(), box_deltas.float()
        return cls_logits, box_deltas

    def _anchors_for(self, height: int, width: int) -> torch.Tensor:
        key = (height, width)
        if key not in self._anchors:
            with torch.inference_mode():
                anchors = self.model.anchors_for(height, width)
            self._anchors[key] = anchors.to(self.device, torch.float32)
        return self._anchors[key]

    def postprocess(
        self, outputs: tuple[torch.Tensor, torch.Tensor], batch: PreparedBatch
    ) -> list[dict[str, torch.Tensor]]:
        """Scores, top-k, decoding and NMS, then map the boxes back to the original pixels.

        With several scales NMS is left to the merge (the paper: top-k per scale, one NMS over
        all scales), so each scale keeps up to ``topk`` boxes here. A scale with a ``max_box``
        then drops its boxes of that side or more (input pixels).

        Args:
            outputs: :meth:`forward`'s ``(cls_logits, box_deltas)``.
            batch: the :meth:`preprocess` result the outputs belong to.

        Returns:
            Per image ``{"boxes": (K, 4), "scores": (K,)}`` in original pixels, scores descending.

        Raises:
            RuntimeError: the outputs do not match the anchors of the input size.
        """
        with self.timed("postprocess"):
            cls_logits, box_deltas = outputs
            ph, pw = batch.tensor.shape[-2:]
            anchors = self._anchors_for(int(ph), int(pw))
            if cls_logits.shape[-1] != anchors.shape[0] or box_deltas.shape[1] != anchors.shape[0]:
                raise RuntimeError(
                    f"the network returned {cls_logits.shape[-1]} predictions for a {ph}x{pw} "
                    f"input but there are {anchors.shape[0]} anchors (model/backend mismatch?)"
                )
            single = self.views == 1
            results = postprocess_detections(
                cls_logits.reshape(cls_logits.shape[0], -1),
                box_deltas,
                anchors,
                self.box_coder,
                batch.input_sizes,
                score_thresh=self._raw_floor(),
                topk=self.topk,
                nms_thresh=self.nms_thresh if single else None,
                max_det=self.max_det if single else self.topk,
            )
            out = []
            for res, (h, w), (oh, ow) in zip(results, batch.input_sizes, batch.original_sizes):
                if batch.scale is not None and batch.scale.max_box is not None:
                    side = box_area(res["boxes"]).sqrt()  # decoded boxes: x2 >= x1, y2 >= y1
                    res = {k: v[side < batch.scale.max_box] for k, v in res.items()}
                boxes = res["boxes"].float().clone()
                boxes[:, 0::2] = (boxes[:, 0::2] * (ow / w)).clamp_(0, ow)
                boxes[:, 1::2] = (boxes[:, 1::2] * (oh / h)).clamp_(0, oh)
                out.append({"boxes": boxes, "scores": res["scores"].float()})
        return out

    @property
    def views(self) -> int:
        """Network passes per image: one per scale, two for a scale that is mirrored too (:attr:`flip`)."""
        return len(self._view_plan())

    def _view_plan(self) -> list[tuple[Scale, bool]]:
        """The ``(scale, mirrored)`` passes, in run order: each scale, then its mirror when
        :attr:`flip` is on and the scale allows it (:attr:`Scale.flip`)."""
        return [(scale, mirrored) for scale in self.scales
                for mirrored in ((False, True) if self.flip and scale.flip else (False,))]

    def _raw_floor(self) -> float:
        """The raw-score threshold of each view: :attr:`score_thresh`, or with a calibration the
        raw score below which nothing calibrates above it (:meth:`ScoreCalibration.raw_score_floor`);
        at least :attr:`raw_score_floor`."""
        if self.verifier is not None:  # it may raise any box above the floor it was fitted at
            derived = self.verifier.stacking.raw_score_floor
        elif self.calibration is not None:
            derived = self.calibration.raw_score_floor(self.score_thresh)
        else:
            derived = self.score_thresh
        return derived if self.raw_score_floor is None else max(derived, self.raw_score_floor)

    def _merge(self, per_scale: list[dict[str, torch.Tensor]], image: np.ndarray) -> dict[str, torch.Tensor]:
        """One image's views merged (NMS, agreement), calibrated and verified: its final boxes."""
        if len(per_scale) > 1:
            with self.timed("postprocess"):
                per_scale = [merge_multiscale(per_scale, nms_thresh=self.nms_thresh, max_det=self.max_det,
                                              agreement_iou=self.agreement_iou)]
        return self._finalise(per_scale[0], image)

    def _finalise(self, result: dict[str, torch.Tensor], image: np.ndarray) -> dict[str, torch.Tensor]:
        """The final boxes' calibrated scores (after NMS and the merge, which rank by the raw
        scores; each box measured in the input pixels of the calibration's reference scale), then
        the verifier's scores and boxes, then :attr:`score_thresh` on them."""
        if self.calibration is None and self.verifier is None:
            return result  # the raw floor was the threshold
        boxes, scores = result["boxes"], result["scores"]
        if self.calibration is not None:
            with self.timed("postprocess"):
                factor = Scale.parse(self.calibration.reference_scale).length_factor(*image.shape[:2])
                scores = self.calibration(scores, boxes * factor)
        if self.verifier is not None:
            with self.timed("verify"):
                boxes, scores = self.verifier(image, boxes, scores, score_thresh=self.score_thresh,
                                              max_boxes=self.verifier_max_boxes)
        keep = scores > self.score_thresh
        return {"boxes": boxes[keep], "scores": scores[keep]}

    def _check_upscale(self, scale: Scale, height: int, width: int) -> None:
        """Warn (once per scale) when ``scale`` enlarges an image beyond :data:`~acfd.predict.onnx_pipeline.MAX_UPSCALE`."""
        warn_upscale(scale, height, width, self._upscale_warned)

    # -- whole pipeline -------------------------------------------------------------------

    def detect_arrays(
        self,
        images: Sequence[np.ndarray],
        sources: Sequence[str | None] | None = None,
        batch_size: int | None = None,
    ) -> list[Detections]:
        """Detect faces in RGB uint8 arrays (all scales and views, merged).

        At each scale the images whose padded network input has the same size go through the
        network together (in chunks of :attr:`batch_size`), so a batch gives exactly the same
        result as one image at a time. With :attr:`flip` each scale also sees the mirrored
        images, whose boxes are mirrored back before the merge.

        Args:
            images: ``(H, W, 3)`` uint8 RGB arrays.
            sources: a source label per image (stored in :attr:`Detections.source`).
            batch_size: largest network batch; ``None`` is :attr:`batch_size`.
        """
        if self.pipeline is not None:
            return self.pipeline.detect_arrays(images, sources, batch_size)
        step = self.batch_size if batch_size is None else max(1, int(batch_size))
        if sources is None:
            sources = [None] * len(images)
        per_image: list[list[dict[str, torch.Tensor]]] = [[] for _ in images]
        for scale, mirrored in self._view_plan():
            groups: dict[tuple[int, int], list[int]] = {}
            for i, im in enumerate(images):
                self._check_upscale(scale, *im.shape[:2])
                groups.setdefault(self.padded_size(*scale.target_size(*im.shape[:2])), []).append(i)
            for idxs in groups.values():
                for start in range(0, len(idxs), step):
                    chunk = idxs[start : start + step]
                    views = [np.ascontiguousarray(images[i][:, ::-1]) if mirrored else images[i] for i in chunk]
                    batch = self.preprocess(views, scale)
                    results = self.postprocess(self.forward(batch.tensor), batch)
                    self.timings.batches += 1
                    for i, res in zip(chunk, results):
                        per_image[i].append(_mirror_boxes(res, images[i].shape[:2]) if mirrored else res)
        out = []
        for im, src, results in zip(images, sources, per_image):
            merged = self._merge(results, im)
            scores = merged["scores"].detach().float().cpu().numpy()
            order = np.argsort(-scores, kind="stable")
            boxes = merged["boxes"].detach().float().cpu().numpy()[order]
            out.append(Detections(boxes, scores[order], tuple(im.shape[:2]), source=src))
        self.timings.images += len(images)
        return out

    def __call__(self, images: ImageInput | Sequence[ImageInput], *, bgr: bool = False) -> Detections | list[Detections]:
        """Detect faces in one image or a list of images.

        Args:
            images: one image (see :func:`~acfd.predict.inputs.as_rgb_array`: path, PIL image,
                NumPy array, torch tensor) or a list of them (a ``(B, 3, H, W)`` tensor or
                ``(B, H, W, 3)`` array is a list too).
            bgr: NumPy arrays / tensors hold BGR channels (OpenCV's ``cv2.imread``).

        Returns:
            :class:`Detections` for one image, a list of them for a list.

        Raises:
            ImageReadError: a path that cannot be read.
            ValueError, TypeError: an unsupported input.
        """
        return detect_inputs(self, images, bgr)

    def detect_paths(
        self,
        paths: Iterable[str | os.PathLike[str]],
        batch_size: int = 1,
        progress: bool = True,
    ) -> Iterator[tuple[Path, Detections | Exception]]:
        """Detect faces in image files, in order; a file that cannot be read never stops the run.

        Args:
            paths: image files.
            batch_size: images per network call.
            progress: show a tqdm bar on stderr.

        Yields:
            ``(path, Detections)``, or ``(path, ImageReadError)`` for a file that cannot be read.
        """
        return detect_files(self, paths, batch_size=batch_size, progress=progress)

    def detect_video(
        self,
        path: str | os.PathLike[str],
        every: int = 1,
        batch_size: int = 1,
    ) -> Iterator[Detections]:
        """Detect faces in every ``every``-th frame of a video.

        Args:
            path: video file.
            every: keep frames 0, every, 2 * every...
            batch_size: frames per network call.

        Yields:
            :class:`Detections` with ``source``, ``frame_index`` and ``timestamp`` set.

        Raises:
            VideoReadError: the video cannot be opened or no frame decodes.
        """
        for _, dets in detect_frames(self, path, every=every, batch_size=batch_size):
            yield dets

    def detect_video_frames(
        self,
        path: str | os.PathLike[str],
        every: int = 1,
        batch_size: int = 1,
    ) -> Iterator[tuple[np.ndarray, Detections]]:
        """Like :meth:`detect_video`, also yielding each frame (RGB) to draw on or save.

        Args:
            path: video file.
            every: keep frames 0, every, 2 * every...
            batch_size: frames per network call.

        Yields:
            ``(frame (H, W, 3) uint8 RGB, Detections)``.

        Raises:
            VideoReadError: the video cannot be opened or no frame decodes.
        """
        return detect_frames(self, path, every=every, batch_size=batch_size)


__all__ = ["Detector", "PreparedBatch"]
