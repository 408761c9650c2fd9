"""The Python API: :class:`Detector` turns images into :class:`Detections`.

Inference follows the paper (4.1 "Inference"): each image is resized to every test scale, each
scale keeps its top ``topk`` (1000) boxes with a score above the threshold, the boxes are mapped back
to the original pixels, and all scales are merged by NMS (the paper: IoU 0.55; here :data:`DEFAULT_NMS_THRESH`), keeping the top ``max_det``
(100). ``Detector.for_evaluation()`` keeps every box whose raw score passes 0.08 and the shipped model's best settings
on dev (:data:`EVAL_SCALES`, test-time flip, NMS 0.45, view-agreement rescoring; ``scales="paper",
flip=False, nms_thresh=0.55, agreement_iou=None`` is the paper's protocol); interactive use
defaults to one scale (longer side 640), score threshold 0.35, NMS 0.45, no flip. Scores are
calibrated when the weights carry a calibration (:mod:`acfd.detection.calibration`).

The work is split into separately timed steps (:meth:`Detector.preprocess`,
:meth:`Detector.forward`, :meth:`Detector.postprocess`; totals in :attr:`Detector.timings`) so a
benchmark can report them apart, and the network can be swapped for any callable with the same
raw-tensor contract (e.g. an ONNX Runtime session wrapper) through ``backend=``.

Example::

    from acfd import Detector

    det = Detector()                      # the shipped default weights
    faces = det("page.png")               # Detections
    for box, score in zip(faces.boxes, faces.scores):
        print(box, score)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import tv_tensors
from torchvision.ops import box_area
from torchvision.transforms.v2 import functional as F
from tqdm.auto import tqdm

from acfd.config import ModelConfig, model_config_from_dict
from acfd.data.image_io import ImageReadError, load_image
from acfd.detection.calibration import ScoreCalibration
from acfd.detection.postprocess import merge_multiscale, postprocess_detections
from acfd.engine.defaults import (
    DEFAULT_NMS_THRESH,
    DEFAULT_SCALES,
    DEFAULT_SCORE_THRESH,
    EVAL_AGREEMENT_IOU,
    EVAL_FLIP,
    EVAL_NMS_THRESH,
    EVAL_SCALES,
    EVAL_SCORE_THRESH,
    PAPER_SCALES,
)
from acfd.engine.visualize import DEFAULT_COLOR, draw_detections

if TYPE_CHECKING:  # pragma: no cover
    from acfd.data.formats import ImageRecord
    from acfd.deploy.onnx_runner import OnnxRunner
    from acfd.detection.verifier import BoxVerifier

logger = logging.getLogger(__name__)

#: Anything :meth:`Detector.__call__` accepts as one image.
ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]
#: ``runner(images (B, 3, H, W) float32 normalised) -> (cls_logits (B, A), box_deltas (B, A, 4))``.
Backend = Callable[[np.ndarray], Sequence[Any]]

#: Largest side of a test scale in pixels. The network input (and its memory: several GB for
#: acfd-l at 4096x4096) grows with its area, so larger scales are refused with a clear error
#: instead of an allocation failure (the decoder's ``max_pixels`` plays the same role for files).
MAX_SCALE_SIDE = 4096
#: Network backends of :class:`Detector`: ``auto`` is ONNX Runtime on CPU when it is installed
#: and the weights come from a file, else PyTorch.
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")

_SCALE_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
_CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt")


def _mirror_boxes(result: dict[str, torch.Tensor], image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Boxes found on a horizontally mirrored ``(height, width)`` image, in the original's pixels."""
    boxes = F.horizontal_flip_bounding_boxes(result["boxes"], format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=image_size)
    return {**result, "boxes": boxes}


# --------------------------------------------------------------------------------------------
# scales


@dataclass(frozen=True)
class Scale:
    """A test scale: an exact ``height x width`` resize, or the longer side (aspect kept).

    Args:
        height: exact output height (with ``width``).
        width: exact output width (with ``height``).
        long_side: resize so that ``max(h, w) == long_side`` (instead of ``height``/``width``).
        max_box: keep only the boxes this view finds whose side ``sqrt(w * h)``, in this view's
            input pixels, is below ``max_box`` (``None``: all). A *valid range* per scale, as SNIP
            does at test time (Singh & Davis, CVPR 2018): an enlarged view adds the small faces
            without its false alarms on faces larger than the network was trained on.
        flip: ``False`` never mirrors this scale, even when the detector's ``flip`` is on.
    """

    height: int | None = None
    width: int | None = None
    long_side: int | None = None
    max_box: int | None = None
    flip: bool = True

    def __post_init__(self) -> None:
        exact = self.height is not None and self.width is not None
        if exact == (self.long_side is not None) or (self.height is None) != (self.width is None):
            raise ValueError("a Scale is either height and width, or long_side")
        if self.max_box is not None and self.max_box < 1:
            raise ValueError(f"a scale's max box size must be at least 1 pixel, got {self.max_box}")
        for v in (self.height, self.width, self.long_side):
            if v is not None and v < 16:
                raise ValueError(f"scale sizes must be at least 16 pixels, got {v}")
            if v is not None and v > MAX_SCALE_SIDE:
                raise ValueError(
                    f"scale size {v} is larger than the limit of {MAX_SCALE_SIDE} pixels (the "
                    "network input would need too much memory)"
                )

    @classmethod
    def parse(cls, spec: str | int | Sequence[int] | Scale) -> Scale:
        """Parse ``"640x860"`` (height x width), ``"960"`` / ``960`` (longer side) or ``(640, 860)``.

        A string may add options after colons: ``max<N>`` (:attr:`max_box`) and ``noflip``
        (:attr:`flip` off), e.g. ``"960:max128:noflip"``.

        Args:
            spec: the scale.

        Raises:
            ValueError: anything else.
        """
        if isinstance(spec, Scale):
            return spec
        if isinstance(spec, bool):
            raise ValueError(f"invalid scale {spec!r}")
        if isinstance(spec, (int, np.integer)):
            return cls(long_side=int(spec))
        if isinstance(spec, str):
            text, *options = [part.strip() for part in spec.strip().split(":")]
            extra: dict[str, Any] = {}
            for opt in options:
                if opt.lower() == "noflip" and "flip" not in extra:
                    extra["flip"] = False
                elif opt.lower().startswith("max") and opt[3:].isdigit() and "max_box" not in extra:
                    extra["max_box"] = int(opt[3:])
                else:
                    raise ValueError(
                        f"invalid scale {spec!r}: option {opt!r} is not max<N> (e.g. max128) or noflip"
                    )
            m = _SCALE_RE.match(text)
            if m:
                return cls(height=int(m.group(1)), width=int(m.group(2)), **extra)
            if text.isdigit():
                return cls(long_side=int(text), **extra)
            raise ValueError(
                f"invalid scale {spec!r}: expected HEIGHTxWIDTH (e.g. 640x860) or a longer side "
                "(e.g. 960), optionally with :max<N> and :noflip (e.g. 960:max128:noflip)"
            )
        if isinstance(spec, Sequence) and len(spec) == 2:
            return cls(height=int(spec[0]), width=int(spec[1]))
        raise ValueError(f"invalid scale {spec!r}")

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """The ``(height, width)`` an image of that size is resized to at this scale.

        Args:
            height: original height.
            width: original width.
        """
        if self.long_side is None:
            return int(self.height), int(self.width)  # type: ignore[arg-type]
        factor = self.long_side / max(height, width)
        return max(1, round(height * factor)), max(1, round(width * factor))

    def length_factor(self, height: int, width: int) -> float:
        """How much longer a length becomes in this scale's input than in the original image
        (the geometric mean of the two axes' factors, for box sides ``sqrt(w * h)``)."""
        th, tw = self.target_size(height, width)
        return math.sqrt(th * tw / (height * width))

    def __str__(self) -> str:
        text = str(self.long_side) if self.long_side is not None else f"{self.height}x{self.width}"
        if self.max_box is not None:
            text += f":max{self.max_box}"
        return text if self.flip else text + ":noflip"


def parse_scales(spec: str | Iterable[str | int | Sequence[int] | Scale] | None) -> tuple[Scale, ...]:
    """Parse a list of test scales.

    Args:
        spec: ``None`` (:data:`DEFAULT_SCALES`), ``"paper"`` (:data:`PAPER_SCALES`),
            ``"default"``, a comma-separated string (``"640x860,800x1075"``), a list of scale
            specs (see :meth:`Scale.parse`), or one ``(height, width)`` tuple of two ints.

    Raises:
        ValueError: an invalid or empty spec.
    """
    if spec is None:
        spec = DEFAULT_SCALES
    if isinstance(spec, (int, Scale)):
        spec = [spec]
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key == "paper":
            spec = PAPER_SCALES
        elif key == "default":
            spec = DEFAULT_SCALES
        else:
            spec = [s for s in spec.split(",") if s.strip()]
    elif isinstance(spec, tuple) and len(spec) == 2 and all(isinstance(v, int) for v in spec):
        spec = [spec]  # one (h, w) pair
    scales = tuple(Scale.parse(s) for s in spec)
    if not scales:
        raise ValueError("no test scales given")
    return scales


# --------------------------------------------------------------------------------------------
# results


@dataclass
class Detections:
    """The faces found in one image.

    Args:
        boxes: ``(N, 4)`` float32 x1, y1, x2, y2 in the original image's pixels.
        scores: ``(N,)`` float32 confidences, descending.
        image_size: ``(height, width)`` of the original image.
        source: the file the image came from, if any.
        frame_index: the frame number for video frames.
        timestamp: the frame time in seconds for video frames.
    """

    boxes: np.ndarray
    scores: np.ndarray
    image_size: tuple[int, int]
    source: str | None = None
    frame_index: int | None = None
    timestamp: float | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(self.boxes) != len(self.scores):
            raise ValueError(f"{len(self.scores)} scores for {len(self.boxes)} boxes")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def draw(
        self,
        image: ImageInput,
        color: tuple[int, int, int] | str = DEFAULT_COLOR,
        thickness: int | None = None,
        show_scores: bool = True,
        bgr: bool = False,
    ) -> np.ndarray:
        """Return a copy of ``image`` with the boxes (and scores) drawn.

        Args:
            image: the image these detections belong to (any input :class:`Detector` accepts).
            color: RGB box colour or a colour name.
            thickness: line width; ``None`` scales it with the image size.
            show_scores: write each score above its box.
            bgr: ``image`` is a BGR array (OpenCV); the result is then BGR too.

        Raises:
            ValueError: the image size differs from :attr:`image_size`.
        """
        rgb = as_rgb_array(image, bgr=bgr)
        if rgb.shape[:2] != self.image_size:
            raise ValueError(
                f"image is {rgb.shape[0]}x{rgb.shape[1]} (HxW) but these detections are for "
                f"{self.image_size[0]}x{self.image_size[1]}"
            )
        out = draw_detections(
            rgb, self.boxes, self.scores if show_scores else None, color=color, thickness=thickness
        )
        return np.ascontiguousarray(out[..., ::-1]) if bgr else out

    def to_record(self, filename: str | None = None) -> ImageRecord:
        """An :class:`~acfd.data.formats.ImageRecord` (for the CSV / COCO writers and evaluation).

        Args:
            filename: the record key; defaults to :meth:`default_name` (the source's file name).

        Raises:
            ValueError: no ``filename`` and no :attr:`source`.
        """
        from acfd.data.formats import ImageRecord

        if filename is None:
            if self.source is None:
                raise ValueError("to_record() needs a filename for detections without a source")
            filename = self.default_name()
        h, w = self.image_size
        return ImageRecord(
            filename=filename, boxes=self.boxes.copy(), scores=self.scores.copy(), width=w, height=h
        )

    def default_name(self) -> str | None:
        """The source's file name, with ``#frame=000120`` for a video frame (``None`` without source)."""
        if self.source is None:
            return None
        name = Path(self.source).name
        return name if self.frame_index is None else f"{name}#frame={self.frame_index:06d}"

    def to_dict(self, filename: str | None = None, decimals: int = 2) -> dict[str, Any]:
        """A JSON-friendly dict: ``file, width, height, detections [{box, score}], frame, timestamp``.

        Args:
            filename: the ``file`` value; defaults to :attr:`source` (with ``#frame=...`` for frames).
            decimals: rounding of box coordinates.
        """
        h, w = self.image_size
        return {
            "file": filename if filename is not None else (
                self.source if self.frame_index is None else f"{self.source}#frame={self.frame_index:06d}"
            ),
            "width": w,
            "height": h,
            "detections": [
                {"box": [round(float(v), decimals) for v in box], "score": round(float(s), 6)}
                for box, s in zip(self.boxes, self.scores)
            ],
            "frame": self.frame_index,
            "timestamp": None if self.timestamp is None else round(float(self.timestamp), 6),
        }


@dataclass
class Timings:
    """Accumulated wall-clock seconds per inference step (CUDA is synchronised at each step)."""

    load: float = 0.0
    preprocess: float = 0.0
    forward: float = 0.0
    postprocess: float = 0.0
    verify: float = 0.0
    images: int = 0
    batches: int = 0

    def reset(self) -> None:
        """Zero every counter."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, type(getattr(self, f.name))(0))

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    def per_image_ms(self) -> dict[str, float]:
        """Mean milliseconds per image of each step (0 before any image)."""
        n = max(self.images, 1)
        return {k: 1000.0 * getattr(self, k) / n for k in ("load", "preprocess", "forward", "postprocess", "verify")}


@dataclass
class PreparedBatch:
    """The output of :meth:`Detector.preprocess`.

    Args:
        tensor: ``(B, 3, Hp, Wp)`` normalised float input, padded bottom/right to the size divisor.
        input_sizes: ``(h, w)`` of each resized image inside ``tensor`` (before padding).
        original_sizes: ``(h, w)`` of each original image.
        scale: the test scale it was resized to (its :attr:`Scale.max_box` applies in
            :meth:`Detector.postprocess`).
    """

    tensor: torch.Tensor
    input_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]
    scale: Scale | None = None


# --------------------------------------------------------------------------------------------
# input conversion


def _float_to_uint8(a: np.ndarray) -> np.ndarray:
    if a.size and (np.nanmin(a) < -1e-6 or np.nanmax(a) > 1.0 + 1e-6):
        raise ValueError(
            f"float images must hold values in [0, 1] (got {float(np.nanmin(a)):.3g}.."
            f"{float(np.nanmax(a)):.3g}); pass uint8 for 0-255 data"
        )
    return np.rint(np.nan_to_num(a, nan=0.0).clip(0.0, 1.0) * 255.0).astype(np.uint8)


def _array_to_rgb(a: np.ndarray, bgr: bool) -> np.ndarray:
    """``(H, W)``, ``(H, W, 1|3|4)`` uint8 / float [0, 1] / uint16 -> ``(H, W, 3)`` uint8 RGB."""
    if a.ndim == 3 and a.shape[2] not in (1, 3, 4) and a.shape[0] in (1, 3, 4):
        raise ValueError(
            f"expected a channels-last (H, W, 3) array, got shape {a.shape}; for (3, H, W) data "
            "transpose it (a.transpose(1, 2, 0)) or pass a torch tensor"
        )
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise ValueError(f"expected an image array of shape (H, W) or (H, W, 3), got {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"empty image (shape {a.shape})")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = np.rint(a / 257.0).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        a = _float_to_uint8(a)
    else:
        raise ValueError(f"unsupported image dtype {a.dtype} (use uint8 0-255 or float 0-1)")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(a, 3, axis=2))
    if a.shape[2] == 4:  # composite onto white, as load_image does for transparent files
        alpha = a[:, :, 3:4].astype(np.float32) / 255.0
        a = np.rint(a[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if bgr:
        a = a[:, :, ::-1]
    return np.ascontiguousarray(a)


def _pil_to_rgb(im: Image.Image) -> np.ndarray:
    # Same conversions as load_image (EXIF orientation, 16-bit scaling, alpha onto white).
    from acfd.data.image_io import _to_rgb_array

    try:
        im = ImageOps.exif_transpose(im)
    except Exception as exc:  # noqa: BLE001 - a broken EXIF block should not lose the image
        logger.warning("ignoring unreadable EXIF orientation (%s)", exc)
    return _to_rgb_array(im)


def as_rgb_array(image: ImageInput, *, bgr: bool = False) -> np.ndarray:
    """Convert any supported image input to an ``(H, W, 3)`` uint8 RGB array.

    Args:
        image: a file path; a PIL image (any mode; EXIF orientation applied); a NumPy array
            ``(H, W, 3)`` uint8 (RGB, or BGR with ``bgr=True``), ``(H, W)`` grayscale, ``(H, W, 4)``
            (alpha composited onto white) or float in [0, 1]; a torch tensor ``(3, H, W)`` or
            ``(H, W)``, uint8 or float in [0, 1].
        bgr: arrays and tensors hold BGR channels (OpenCV); ignored for paths and PIL images.

    Raises:
        ImageReadError: a path that cannot be read.
        ValueError: an array or tensor of the wrong shape, dtype or value range.
        TypeError: an unsupported input type.
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim == 3 and t.shape[0] in (1, 3, 4):
            t = t.permute(1, 2, 0)
        elif t.ndim != 2:
            raise ValueError(f"expected an image tensor of shape (3, H, W) or (H, W), got {tuple(t.shape)}")
        if t.dtype == torch.bfloat16:
            t = t.float()
        return _array_to_rgb(t.numpy(), bgr)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, bgr)
    raise TypeError(
        f"unsupported image type {type(image).__name__}: use a path, a PIL image, a NumPy array "
        "or a torch tensor"
    )


def _is_batch(images: Any) -> bool:
    if isinstance(images, (list, tuple)):
        return True
    return isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrink = h * w < image.shape[0] * image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


# --------------------------------------------------------------------------------------------
# the detector


def _is_onnx_file(value: object) -> bool:
    return isinstance(value, (str, os.PathLike)) and str(value).lower().endswith(".onnx")


def _weights_file(model: object, weights: str | os.PathLike[str] | None) -> Path | None:
    """The file the network's weights are read from (the ONNX cache key), if any."""
    from acfd.models import registry

    if weights is not None:
        return Path(weights)
    if model is None:
        return registry.default_weights_path()
    if isinstance(model, (str, os.PathLike)) and str(model) not in registry.list_models():
        return Path(model)
    return None


def _check_settings(
    score_thresh: float | None, nms_thresh: float, max_det: int, topk: int, batch_size: int,
    agreement_iou: float | None = None,
) -> None:
    """One-line ``ValueError`` for settings outside their range (checked before the model loads)."""
    if score_thresh is not None and not 0.0 <= float(score_thresh) <= 1.0:
        raise ValueError(f"score_thresh must be in [0, 1], got {score_thresh}")
    if not 0.0 < float(nms_thresh) <= 1.0:
        raise ValueError(f"nms_thresh must be in (0, 1], got {nms_thresh}")
    if agreement_iou is not None and not 0.0 < float(agreement_iou) <= 1.0:
        raise ValueError(f"agreement_iou must be in (0, 1] or None, got {agreement_iou}")
    for name, value in (("max_det", max_det), ("topk", topk), ("batch_size", batch_size)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _looks_like_path(value: str | os.PathLike[str]) -> bool:
    if isinstance(value, os.PathLike):
        return True
    p = Path(value)
    return p.suffix.lower() in _CHECKPOINT_SUFFIXES or p.is_file()


def _backend_config(backend: Backend) -> ModelConfig | None:
    """The model config a backend carries (``model_config`` / ``cfg`` / ``config``), if any."""
    for attr in ("model_config", "cfg", "config"):
        cfg = getattr(backend, attr, None)
        if isinstance(cfg, str):
            cfg = json.loads(cfg)
        if isinstance(cfg, dict):
            return model_config_from_dict(cfg)
        if isinstance(cfg, ModelConfig):
            return cfg
    return None


def _resolve_model(
    model: str | os.PathLike[str] | torch.nn.Module | ModelConfig | None,
    weights: str | os.PathLike[str] | None,
    device: torch.device,
    backend: Backend | None,
) -> torch.nn.Module:
    from acfd.models import registry

    if isinstance(model, torch.nn.Module):
        if weights is not None:
            raise ValueError("weights= cannot be combined with a model instance; load them first")
        return model.to(device).eval()
    if isinstance(model, ModelConfig):
        from acfd.models.detector import ACFD

        if weights is not None or backend is None:
            raise ValueError("model=ModelConfig(...) is only for a backend= (it gives anchors, not weights)")
        return ACFD(model).to(device).eval()
    if model is None and backend is not None and weights is None:
        cfg = _backend_config(backend)
        if cfg is None:
            raise ValueError(
                "backend= needs model= (a variant name, config or ACFD) for the anchors and box "
                "coder, unless the backend has a model_config attribute"
            )
        from acfd.models.detector import ACFD

        return ACFD(cfg).to(device).eval()
    if model is None:
        if weights is not None:
            return registry.load_model(weights, device=device)
        default = registry.default_weights_path()
        if default is None:
            raise FileNotFoundError(
                f"no default weights are shipped with this acfd install ({registry.WEIGHTS_DIR} "
                "has none); pass Detector(model=NAME, weights=PATH) or a checkpoint path"
            )
        return registry.load_model(default, device=device)
    if _looks_like_path(model) and str(model) not in registry.list_models():
        if weights is not None:
            raise ValueError(f"model={model!s} is a checkpoint file; weights= is only for a model name")
        return registry.load_model(model, device=device)
    name = str(model)
    if weights is not None:
        return registry.load_model(name, weights=weights, device=device)
    if backend is not None:  # the backend holds the weights; the model only gives config and anchors
        return registry.create_model(name).to(device).eval()
    logger.warning(
        "no weights given for model %r: using RANDOM initial weights (detections are meaningless)",
        name,
    )
    return registry.create_model(name).to(device).eval()


def _exported_extras(runner: OnnxRunner) -> tuple[ScoreCalibration | None, Path, str | None]:
    """What an ``.onnx`` file that ``acfd export`` wrote carries besides the network: the score
    calibration, its path (its verifier is looked for beside it) and the fingerprint of the
    weights file it came from (:data:`acfd.deploy.export.META_SOURCE_WEIGHTS`)."""
    from acfd.deploy.export import META_SOURCE_WEIGHTS

    return (ScoreCalibration.from_metadata(runner.metadata, str(runner.path)), Path(runner.path),
            runner.metadata.get(META_SOURCE_WEIGHTS))


def _resolve_verifier(
    verifier: BoxVerifier | str | os.PathLike[str] | None, weights_file: Path | None, calibrated: bool,
    onnx_file: Path | None = None, onnx_source: str | None = None,
) -> BoxVerifier | None:
    """The :class:`BoxVerifier` that ``Detector(verifier=...)`` asks for (see its docstring).

    ``onnx_file`` / ``onnx_source``: an exported network and the fingerprint of the weights it was
    exported from (its metadata, ``acfd export``), whose verifier is then looked for beside it."""
    from acfd.detection.verifier import BoxVerifier, default_verifier_path, detector_fingerprint, load_verifier

    if verifier is None:
        return None
    if isinstance(verifier, str) and verifier == "auto":
        if onnx_file is not None:
            beside, expected = onnx_file, onnx_source
        elif weights_file is not None and weights_file.suffix == ".safetensors":
            beside, expected = weights_file, None
        else:
            return None
        path = default_verifier_path(beside)
        if not path.is_file() or (onnx_file is not None and not expected):
            return None
        found = load_verifier(path)
        if found.detector != (expected or detector_fingerprint(beside)):
            logger.warning("%s was fitted for other weights than %s; not using it (pass verifier=PATH to force)",
                           path, beside)
            return None
        if found.stacking.calibrated != calibrated:
            logger.debug("not using %s: it combines %s scores", path, "calibrated" if found.stacking.calibrated else "raw")
            return None
        return found
    found = verifier if isinstance(verifier, BoxVerifier) else load_verifier(verifier)
    if found.stacking.calibrated != calibrated:
        raise ValueError(f"{found.source or 'the verifier'}: it combines {'calibrated' if found.stacking.calibrated else 'raw'} "
                         f"detector scores, but this detector's are {'calibrated' if calibrated else 'raw'}")
    if weights_file is not None and found.detector and found.detector != detector_fingerprint(weights_file):
        logger.warning("%s was fitted for other weights than %s", found.source or "the verifier", weights_file)
    return found


class Detector:
    """Find cartoon faces in images.

    Args:
        model: a variant name (``"acfd-s"``; with no ``weights`` it gets random weights and a
            warning), a weights/checkpoint file, an ``ACFD`` module, or ``None`` for the shipped
            default model. With a ``backend`` a name or a ``ModelConfig`` is enough (or nothing
            when the backend has a ``model_config`` attribute).
        weights: weights for a model given by name.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        scales: test scales (see :func:`parse_scales`); ``None`` is :data:`DEFAULT_SCALES`.
        score_thresh: keep boxes scoring above this; ``None`` is :data:`DEFAULT_SCORE_THRESH`.
        nms_thresh: NMS IoU threshold (across scales and views when there are several).
        max_det: keep at most this many boxes per image.
        topk: per scale, keep at most this many boxes before NMS.
        half: run the network in float16 (CUDA only; ignored with a warning on CPU).
        backend: which engine runs the network. ``"auto"`` (default): ONNX Runtime on CPU when
            it is installed and the weights come from a file (2-3x faster than PyTorch eager on
            CPU; the fused network is exported once and cached, see
            :func:`acfd.deploy.onnx_runner.cached_onnx`), else PyTorch; ``"torch"``;
            ``"onnx"`` (ONNX Runtime, error if unavailable); or a callable
            ``runner(images (B, 3, H, W) float32 numpy) -> (cls_logits (B, A),
            box_deltas (B, A, 4))``, for which ``model`` only supplies the config, anchors and box
            coder (a name is enough). A ``.onnx`` file as ``model`` always runs in ONNX Runtime.
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
            paper's protocol: 0.08, :meth:`for_evaluation`), whatever its calibrated score;
            ``None``: only ``score_thresh`` decides.
        verifier: the second-stage face verifier (:mod:`acfd.detection.verifier`), which
            re-scores and refines every final box from a crop around it. ``"auto"`` (default):
            the ``NAME-verifier.safetensors`` beside the weights file, if there is one fitted for
            that very file (the shipped model has one) and for its scores (calibrated or not),
            or beside an ``.onnx`` model that ``acfd export`` wrote from that file;
            ``None``: none; a path to a verifier file; or a
            :class:`~acfd.detection.verifier.BoxVerifier`. With a verifier every box above its
            stacking's raw floor (0.08) is verified and ``score_thresh`` applies to the verified
            scores.

    Raises:
        FileNotFoundError: ``Detector()`` when no default weights are shipped, or a missing file.
        ValueError: a setting out of range (``score_thresh`` outside [0, 1], ``nms_thresh``
            or ``agreement_iou`` outside (0, 1], ``max_det``/``topk``/``batch_size`` < 1), an unknown or unavailable
            device, weights of another variant.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | torch.nn.Module | ModelConfig | None = None,
        weights: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        scales: str | Iterable[str | int | Sequence[int] | Scale] | None = None,
        score_thresh: float | None = None,
        nms_thresh: float = DEFAULT_NMS_THRESH,
        max_det: int = 100,
        topk: int = 1000,
        half: bool = False,
        backend: Backend | str | None = "auto",
        batch_size: int = 16,
        flip: bool = False,
        agreement_iou: float | None = None,
        calibration: ScoreCalibration | str | None = "auto",
        raw_score_floor: float | None = None,
        verifier: BoxVerifier | str | os.PathLike[str] | None = "auto",
    ) -> None:
        from acfd.utils import resolve_device

        _check_settings(score_thresh, nms_thresh, max_det, topk, batch_size, agreement_iou)
        self.device = resolve_device(device)
        choice = "torch" if backend is None else backend
        if isinstance(choice, str) and choice not in BACKENDS:
            raise ValueError(f"unknown backend {choice!r}; use one of {', '.join(BACKENDS)} or a callable")
        runner: Backend | None = None if isinstance(choice, str) else choice
        if raw_score_floor is not None and not 0.0 <= float(raw_score_floor) <= 1.0:
            raise ValueError(f"raw_score_floor must be in [0, 1], got {raw_score_floor}")
        if isinstance(calibration, str) and calibration != "auto":
            raise ValueError(f"calibration must be 'auto', None or a ScoreCalibration, got {calibration!r}")
        stored: ScoreCalibration | None = None  # what "auto" finds with the weights
        # the file the weights come from (not the default file when a backend brings its own network)
        from_backend = _is_onnx_file(model) or (runner is not None and model is None and weights is None)
        weights_source = None if from_backend else _weights_file(model, weights)
        onnx_file: Path | None = None
        onnx_source: str | None = None
        if _is_onnx_file(model):  # an exported network: ONNX Runtime runs it, its metadata gives the config
            from acfd.deploy.onnx_runner import OnnxRunner

            if weights is not None or choice == "torch" or runner is not None:
                raise ValueError(f"{model}: an .onnx file runs in ONNX Runtime; give no weights= or backend=")
            runner = OnnxRunner(model, providers=None if self.device.type == "cuda" else ["CPUExecutionProvider"],
                                num_threads=torch.get_num_threads())
            stored, onnx_file, onnx_source = _exported_extras(runner)
            model = None
        self.backend = runner
        self.model = _resolve_model(model, weights, self.device, runner)
        self.model.eval()
        if weights_source is not None and calibration == "auto":  # the file has loaded: it exists
            from acfd.models.registry import read_metadata

            stored = ScoreCalibration.from_metadata(read_metadata(weights_source), str(weights_source))
        self.calibration = stored if calibration == "auto" else calibration
        self.verifier = _resolve_verifier(verifier, weights_source, self.calibration is not None, onnx_file, onnx_source)
        if runner is None and choice in ("auto", "onnx"):
            self.backend = self._onnx_backend(choice, weights_source, half)
        if self.verifier is not None:
            self._place_verifier(self.verifier)
        self.cfg = self.model.cfg
        self.box_coder = self.model.box_coder
        self.scales = parse_scales(scales)
        self.score_thresh = DEFAULT_SCORE_THRESH if score_thresh is None else float(score_thresh)
        self.raw_score_floor = None if raw_score_floor is None else float(raw_score_floor)
        self.nms_thresh = float(nms_thresh)
        self.max_det = int(max_det)
        self.topk = int(topk)
        self.batch_size = int(batch_size)
        self.flip = bool(flip)
        self.agreement_iou = None if agreement_iou is None else float(agreement_iou)
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
        self.timings = Timings()

    def _place_verifier(self, verifier: BoxVerifier) -> None:
        """The verifier's network with ONNX Runtime where the detector's runs with it, else on the
        detector's device (PyTorch when the export fails)."""
        from acfd.deploy.onnx_runner import OnnxRunner

        if isinstance(self.backend, OnnxRunner) and self.device.type == "cpu":
            try:
                verifier.use_onnx_runtime(torch.get_num_threads())
                return
            except Exception as exc:  # noqa: BLE001 - any export / session failure: PyTorch instead
                logger.debug("verifier on PyTorch (ONNX Runtime failed: %s)", exc)
        verifier.to(self.device)

    def _onnx_backend(self, choice: str, weights_file: Path | None, half: bool) -> Backend | None:
        """An ONNX Runtime runner of the fused network (cached export), or ``None`` for PyTorch.

        ``auto`` uses it only on CPU, in float32, for weights read from a file, and falls back to
        PyTorch (debug log / warning) when onnxruntime is missing or the export fails; ``onnx``
        raises instead.
        """
        explicit = choice == "onnx"
        reason = None
        if self.device.type != "cpu" and not explicit:
            reason = f"device {self.device}"
        elif half:
            reason = "half precision"
        elif weights_file is None and not explicit:
            reason = "weights not from a file"
        else:
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                reason = "onnxruntime is not installed"
        if reason is not None:
            if explicit:
                raise ValueError(f"backend='onnx' is not available here ({reason})")
            logger.debug("using PyTorch for the network (%s)", reason)
            return None
        from acfd.deploy.onnx_runner import OnnxRunner, cached_onnx

        try:
            path = cached_onnx(self.model, weights_file)
            providers = None if self.device.type == "cuda" else ["CPUExecutionProvider"]
            return OnnxRunner(path, providers=providers, num_threads=torch.get_num_threads())
        except Exception as exc:  # noqa: BLE001 - auto: any export/runtime problem -> PyTorch
            if explicit:
                raise
            logger.warning("ONNX Runtime backend unavailable (%s); using PyTorch", exc)
            return None

    @property
    def backend_name(self) -> str:
        """``"torch"``, ``"onnx"`` (ONNX Runtime) or the class name of a custom backend."""
        if self.backend is None:
            return "torch"
        from acfd.deploy.onnx_runner import OnnxRunner

        return "onnx" if isinstance(self.backend, OnnxRunner) else type(self.backend).__name__

    @classmethod
    def for_evaluation(
        cls,
        model: str | os.PathLike[str] | torch.nn.Module | None = None,
        weights: str | os.PathLike[str] | None = None,
        *,
        scales: str | Iterable[str | int | Sequence[int] | Scale] | None = EVAL_SCALES,
        score_thresh: float = 0.0,
        raw_score_floor: float = EVAL_SCORE_THRESH,
        flip: bool = EVAL_FLIP,
        nms_thresh: float = EVAL_NMS_THRESH,
        agreement_iou: float | None = EVAL_AGREEMENT_IOU,
        **kwargs: Any,
    ) -> Detector:
        """A detector for AP evaluation and submissions: raw network score > 0.08 (the paper's
        protocol, 4.1) and every calibrated score kept (AP needs the low-score tail), top 1,000
        per scale and view, top 100 per image; scales, flip and NMS threshold chosen on
        the dev split for the shipped model (:mod:`acfd.engine.defaults`).

        Args:
            model: as for :class:`Detector`.
            weights: as for :class:`Detector`.
            scales: test scales (default :data:`EVAL_SCALES`, the shipped model's best on dev;
                ``"paper"`` for the paper's 480x645, 640x860, 800x1075).
            score_thresh: threshold on the reported (calibrated) scores, default 0: none.
            raw_score_floor: default :data:`EVAL_SCORE_THRESH` (0.08, on the network's scores).
            flip: default :data:`EVAL_FLIP`.
            nms_thresh: default :data:`EVAL_NMS_THRESH`.
            agreement_iou: default :data:`EVAL_AGREEMENT_IOU`.
            **kwargs: any other :class:`Detector` argument.
        """
        return cls(model, weights, scales=scales, score_thresh=score_thresh, raw_score_floor=raw_score_floor,
                   flip=flip, nms_thresh=nms_thresh, agreement_iou=agreement_iou, **kwargs)

    def __repr__(self) -> str:
        return (
            f"Detector(model={self.cfg.name!r}, device={str(self.device)!r}, "
            f"scales={[str(s) for s in self.scales]}, score_thresh={self.score_thresh}, "
            f"raw_score_floor={self.raw_score_floor}, calibrated={self.calibration is not None}, "
            f"nms_thresh={self.nms_thresh}, max_det={self.max_det}, flip={self.flip}, agreement_iou={self.agreement_iou}"
            f", backend={self.backend_name!r}, verifier={self.verifier is not None})"
        )

    # -- timing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            setattr(self.timings, step, getattr(self.timings, step) + time.perf_counter() - start)

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
        with self._timed("preprocess"):
            sizes = [scale.target_size(*im.shape[:2]) for im in images]
            ph = max(self.padded_size(h, w)[0] for h, w in sizes)
            pw = max(self.padded_size(h, w)[1] for h, w in sizes)
            # Zeros after normalisation = the mean colour, as the model's own padding.
            if self.device.type == "cpu":
                # NumPy on HWC, then one transposing copy: several times faster than torch's
                # elementwise ops on small CPU tensors (and no thread-pool start per call).
                out = np.zeros((len(images), 3, ph, pw), dtype=np.float32)
                for i, (im, (h, w)) in enumerate(zip(images, sizes)):
                    hwc = (_resize(im, (h, w)).astype(np.float32) - self._mean_hwc) * self._inv_std_hwc
                    out[i, :, :h, :w] = hwc.transpose(2, 0, 1)
                batch = torch.from_numpy(out)
            else:  # upload uint8, normalise on the GPU
                batch = torch.zeros((len(images), 3, ph, pw), dtype=torch.float32, device=self.device)
                for i, (im, (h, w)) in enumerate(zip(images, sizes)):
                    arr = np.ascontiguousarray(_resize(im, (h, w)))
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
        with self._timed("forward"):
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
        with self._timed("postprocess"):
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
        raw score below which nothing calibrates above it (:meth:`ScoreCalibration.raw_floor`);
        at least :attr:`raw_score_floor`."""
        if self.verifier is not None:  # it may raise any box above the floor it was fitted at
            derived = self.verifier.stacking.raw_floor
        elif self.calibration is not None:
            derived = self.calibration.raw_floor(self.score_thresh)
        else:
            derived = self.score_thresh
        return derived if self.raw_score_floor is None else max(derived, self.raw_score_floor)

    def _merge(self, per_scale: list[dict[str, torch.Tensor]], image: np.ndarray) -> dict[str, torch.Tensor]:
        """One image's views merged (NMS, agreement), calibrated and verified: its final boxes."""
        if len(per_scale) > 1:
            with self._timed("postprocess"):
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
            with self._timed("postprocess"):
                factor = Scale.parse(self.calibration.reference_scale).length_factor(*image.shape[:2])
                scores = self.calibration(scores, boxes * factor)
        if self.verifier is not None:
            with self._timed("verify"):
                boxes, scores = self.verifier(image, boxes, scores, score_thresh=self.score_thresh)
        keep = scores > self.score_thresh
        return {"boxes": boxes[keep], "scores": scores[keep]}

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
        step = self.batch_size if batch_size is None else max(1, int(batch_size))
        if sources is None:
            sources = [None] * len(images)
        per_image: list[list[dict[str, torch.Tensor]]] = [[] for _ in images]
        for scale, mirrored in self._view_plan():
            groups: dict[tuple[int, int], list[int]] = {}
            for i, im in enumerate(images):
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
            images: one image (see :func:`as_rgb_array`: path, PIL image, NumPy array, torch
                tensor) or a list of them (a ``(B, 3, H, W)`` tensor or ``(B, H, W, 3)`` array is
                a list too).
            bgr: NumPy arrays / tensors hold BGR channels (OpenCV's ``cv2.imread``).

        Returns:
            :class:`Detections` for one image, a list of them for a list.

        Raises:
            ImageReadError: a path that cannot be read.
            ValueError, TypeError: an unsupported input.
        """
        batch = _is_batch(images)
        items = list(images) if batch else [images]
        arrays, sources = [], []
        for item in items:
            with self._timed("load"):
                arrays.append(as_rgb_array(item, bgr=bgr))
            sources.append(str(item) if isinstance(item, (str, os.PathLike)) else None)
        dets = self.detect_arrays(arrays, sources)
        return dets if batch else dets[0]

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
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        paths = [Path(p) for p in paths]
        pending: list[tuple[Path, np.ndarray]] = []

        def flush() -> Iterator[tuple[Path, Detections]]:
            if not pending:
                return
            dets = self.detect_arrays(
                [im for _, im in pending], [str(p) for p, _ in pending], batch_size=batch_size
            )
            done = [(p, d) for (p, _), d in zip(pending, dets)]
            pending.clear()
            for item in done:
                bar.update(1)
                yield item

        with tqdm(total=len(paths), unit="img", disable=not progress, file=sys.stderr, leave=False) as bar:
            for path in paths:
                try:
                    with self._timed("load"):
                        image = load_image(path)
                except (ImageReadError, OSError) as exc:
                    yield from flush()
                    logger.debug("cannot read %s: %s", path, exc)
                    bar.update(1)
                    yield path, exc
                    continue
                pending.append((path, image))
                if len(pending) >= batch_size:
                    yield from flush()
            yield from flush()

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
        for _, dets in self.detect_video_frames(path, every=every, batch_size=batch_size):
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
        from acfd.data.video import iter_video_frames

        src = str(path)
        pending: list[tuple[int, float, np.ndarray]] = []

        def flush() -> Iterator[tuple[np.ndarray, Detections]]:
            dets = self.detect_arrays(
                [f for _, _, f in pending], [src] * len(pending), batch_size=batch_size
            )
            done = list(zip(pending, dets))
            pending.clear()
            for (index, ts, frame), d in done:
                d.frame_index, d.timestamp = index, ts
                yield frame, d

        for index, ts, frame in iter_video_frames(path, every=every):
            pending.append((index, ts, frame))
            if len(pending) >= batch_size:
                yield from flush()
        if pending:
            yield from flush()


__all__ = [
    "DEFAULT_NMS_THRESH",
    "DEFAULT_SCALES",
    "DEFAULT_SCORE_THRESH",
    "EVAL_AGREEMENT_IOU",
    "EVAL_FLIP",
    "EVAL_NMS_THRESH",
    "EVAL_SCALES",
    "EVAL_SCORE_THRESH",
    "PAPER_SCALES",
    "Detections",
    "Detector",
    "PreparedBatch",
    "Scale",
    "Timings",
    "as_rgb_array",
    "parse_scales",
]
