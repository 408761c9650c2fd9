"""Training augmentation of ACFD (paper section 4.1, "Data Augmentation") and the eval resize.

(Over 600 lines because the paper's augmentation is one pipeline: its two hand-written v2
transforms, the photometric step and the train / eval / fast-train compositions share their helpers.)

The paper lists, in order: (1) colour distortion; then (b) expansion by a random ratio in [1, 4]
with mean padding (small faces), (c) a random crop of random size and position (large faces), or
(d) "random tile the faces to anchor scales" (PyramidBox data-anchor-sampling); finally a resize to
640x640. The slides ("Data Augmentation") present (b), (c), (d) as alternatives (zoom out, zoom in,
tile to anchor scale), so :class:`TrainTransform` draws exactly ONE of them per image
(probabilities ``p_expand``, ``p_crop``, ``p_anchor_sampling``; the rest of the mass leaves the
image as it is), then flips and resizes.

Built from ``torchvision.transforms.v2`` wherever v2 has the operation (photometric distortion,
zoom-out expansion, flip, resize, clamping, sanitising) on ``tv_tensors.BoundingBoxes`` (XYXY).
Two steps v2 lacks are hand-written as ``v2.Transform`` subclasses:

- :class:`RandomSquareCrop`: the face-detector (S3FD / FaceBoxes / PyramidBox) crop.
- :class:`DataAnchorSampling`: PyramidBox's data-anchor-sampling.

:class:`PhotometricDistort` is ``v2.RandomPhotometricDistort`` with the (slow) hue kernel done by
OpenCV.

Randomness comes from torch's global RNG (what ``torch.utils.data`` seeds per worker), or from a
private ``torch.Generator`` when the transform is given a ``seed`` / ``generator``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ANCHOR_SIZES",
    "DEFAULT_MEAN",
    "DataAnchorSampling",
    "EvalTransform",
    "FastTrainTransform",
    "PhotometricDistort",
    "RandomSquareCrop",
    "TrainTransform",
    "to_tv_tensors",
]

#: RGB pixel mean on the 0-255 scale (ImageNet), used as the padding colour.
DEFAULT_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
#: Anchor sides of ACFD (paper 4.1 "Anchor Design": one 1:1 anchor of side 4 * stride, 16-512 px).
DEFAULT_ANCHOR_SIZES: tuple[int, ...] = (16, 32, 64, 128, 256, 512)


# --------------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------------


def to_tv_tensors(
    image: torch.Tensor | np.ndarray, boxes: torch.Tensor | np.ndarray | Sequence[Sequence[float]]
) -> tuple[tv_tensors.Image, tv_tensors.BoundingBoxes]:
    """Check and wrap an ``(image, boxes)`` pair as tv_tensors; boxes are clipped to the image.

    Args:
        image: uint8 tensor ``(3, H, W)`` (or ``tv_tensors.Image``).
        boxes: ``(N, 4)`` x1, y1, x2, y2 in pixels (tensor, array or nested list; ``N`` may be 0).

    Raises:
        ValueError: the image is not a ``(3, H, W)`` uint8 tensor, or boxes are not ``(N, 4)`` finite.
    """
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"image must be a uint8 torch tensor (3, H, W), got {type(image).__name__}")
    if image.ndim != 3 or image.shape[0] != 3 or image.shape[1] < 1 or image.shape[2] < 1:
        raise ValueError(f"image must have shape (3, H, W), got {tuple(image.shape)}")
    if image.dtype != torch.uint8:
        raise ValueError(f"image must be uint8 (0-255), got {image.dtype}")
    if isinstance(boxes, torch.Tensor):
        b = boxes.detach().as_subclass(torch.Tensor).to(torch.float32)
    else:
        b = torch.as_tensor(np.asarray(boxes, dtype=np.float32))
    if b.numel() == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) x1, y1, x2, y2, got {tuple(b.shape)}")
    if not torch.isfinite(b).all():
        raise ValueError("boxes contain NaN or infinite coordinates")
    h, w = int(image.shape[1]), int(image.shape[2])
    b = b.clone()
    b[:, 0::2] = b[:, 0::2].clamp(0, w)
    b[:, 1::2] = b[:, 1::2].clamp(0, h)
    img = image if isinstance(image, tv_tensors.Image) else tv_tensors.Image(image)
    return img, tv_tensors.BoundingBoxes(b, format="XYXY", canvas_size=(h, w))


def _find(flat_inputs: list[Any]) -> tuple[tuple[int, int], torch.Tensor | None]:
    """(H, W) of the first image-like input, and the XYXY boxes (plain tensor) if any."""
    size: tuple[int, int] | None = None
    boxes: torch.Tensor | None = None
    for x in flat_inputs:
        if isinstance(x, tv_tensors.BoundingBoxes):
            if x.format != tv_tensors.BoundingBoxFormat.XYXY:
                x = F.convert_bounding_box_format(x, new_format=tv_tensors.BoundingBoxFormat.XYXY)
            boxes = x.as_subclass(torch.Tensor).reshape(-1, 4)
            if size is None:
                size = tuple(x.canvas_size)  # type: ignore[assignment]
        elif isinstance(x, torch.Tensor) and x.ndim >= 2 and size is None:
            size = (int(x.shape[-2]), int(x.shape[-1]))
    if size is None:
        raise TypeError("transform needs an image tensor or bounding boxes in its input")
    return size, boxes


def _is_image(inpt: Any) -> bool:
    return isinstance(inpt, tv_tensors.Image) or (
        type(inpt) is torch.Tensor and inpt.ndim >= 3  # a pure tensor image
    )


class _CropWithFill(v2.Transform):
    """Shared kernel: crop a window that may stick out of the image, padding with ``fill``.

    ``v2.functional.crop`` pads out-of-image areas with zeros; ACFD pads with the dataset mean (the
    colour that normalises to 0), as PyramidBox and SSD's expansion do.
    """

    def __init__(self, fill: Sequence[float]) -> None:
        super().__init__()
        self.fill = [int(round(float(v))) for v in fill]

    def _crop(self, inpt: Any, top: int, left: int, height: int, width: int, canvas: tuple[int, int]) -> Any:
        h, w = canvas
        pad = [max(0, -left), max(0, -top), max(0, left + width - w), max(0, top + height - h)]
        if _is_image(inpt) and any(pad):
            inpt = self._call_kernel(F.pad, inpt, padding=pad, fill=self.fill)
            top, left = top + pad[1], left + pad[0]
        return self._call_kernel(F.crop, inpt, top=top, left=left, height=height, width=width)

    @staticmethod
    def _drop_outside(out: Any, keep: torch.Tensor) -> Any:
        # Like v2.RandomIoUCrop: mark dropped boxes degenerate; SanitizeBoundingBoxes removes them.
        if isinstance(out, tv_tensors.BoundingBoxes) and out.shape[0]:
            out[~keep] = 0
        return out


def _centres_inside(
    boxes: torch.Tensor, left: float, top: float, right: float, bottom: float
) -> torch.Tensor:
    cx = 0.5 * (boxes[:, 0] + boxes[:, 2])
    cy = 0.5 * (boxes[:, 1] + boxes[:, 3])
    return (cx > left) & (cx < right) & (cy > top) & (cy < bottom)


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def _randint(lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] (both included)."""
    return int(torch.randint(lo, hi + 1, ()))


# --------------------------------------------------------------------------------------------------
# hand-written steps (what v2 lacks)
# --------------------------------------------------------------------------------------------------


class RandomSquareCrop(_CropWithFill):
    """Random square crop of random size and position, to enlarge faces (paper 4.1 (c)).

    Written by hand because ``v2.RandomIoUCrop`` is SSD's generic-object crop: non-square patches
    chosen by IoU with any box, and no rule on whole faces. Face detectors (S3FD, FaceBoxes,
    PyramidBox) crop a *square* patch whose side is a random fraction of the short image side (so the
    final square resize keeps the aspect ratio) and require at least one face fully inside it. Faces
    whose centre lies inside the patch are kept and clipped, the others are dropped (marked
    degenerate here; run ``v2.SanitizeBoundingBoxes`` afterwards). With no faces any patch is fine;
    when no patch is found in ``trials`` attempts the image is left as it is.

    Args:
        min_scale: smallest patch side as a fraction of the short image side (S3FD: 0.3).
        max_scale: largest fraction (1.0).
        trials: attempts before giving up.
        fill: padding colour (unused: the patch always lies inside the image).
    """

    def __init__(
        self,
        min_scale: float = 0.3,
        max_scale: float = 1.0,
        trials: int = 50,
        fill: Sequence[float] = DEFAULT_MEAN,
    ) -> None:
        super().__init__(fill)
        if not 0.0 < min_scale <= max_scale <= 1.0:
            raise ValueError(f"need 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}")
        if trials < 1:
            raise ValueError(f"trials must be >= 1, got {trials}")
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.trials = trials

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        (h, w), boxes = _find(flat_inputs)
        short = min(h, w)
        for _ in range(self.trials):
            side = max(1, int(short * _uniform(self.min_scale, self.max_scale)))
            left = _randint(0, w - side)
            top = _randint(0, h - side)
            if boxes is None or boxes.shape[0] == 0:
                return {"top": top, "left": left, "side": side, "keep": None, "canvas": (h, w)}
            whole = (
                (boxes[:, 0] >= left)
                & (boxes[:, 1] >= top)
                & (boxes[:, 2] <= left + side)
                & (boxes[:, 3] <= top + side)
                & (boxes[:, 2] > boxes[:, 0])
                & (boxes[:, 3] > boxes[:, 1])
            )
            if whole.any():
                keep = _centres_inside(boxes, left, top, left + side, top + side)
                return {"top": top, "left": left, "side": side, "keep": keep, "canvas": (h, w)}
        return {}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params:
            return inpt
        s = params["side"]
        out = self._crop(inpt, params["top"], params["left"], s, s, params["canvas"])
        if params["keep"] is not None:
            out = self._drop_outside(out, params["keep"])
        return out


class DataAnchorSampling(_CropWithFill):
    """PyramidBox data-anchor-sampling: tile a random face to an anchor scale (paper 4.1 (d)).

    Written by hand: v2 has no equivalent. Following PyramidBox (Tang et al., ECCV 2018, sec. 3.4):
    pick a face at random, with size ``s = sqrt(w * h)``; find the index ``i`` of the anchor size
    nearest to ``s``; pick a target index uniformly in ``{0, ..., min(i + 1, last)}`` (only anchors
    no larger than ``out_size`` so that the face fits); rescale the image by ``target / s``
    (optionally jittered by ``2 ** U(-jitter, jitter)``, PyramidBox uses 1 octave; the default 0
    tiles faces exactly to anchor scales, as the ACFD slides put it, "for better align the receptive
    field"); then take an ``out_size x out_size`` window (in rescaled pixels) that contains the face,
    at a random position, mean-padded where it leaves the image. Faces whose centre lies inside the
    window are kept and clipped.

    To bound memory the image is never enlarged here: when the face must grow, a window of
    ``round(out_size / ratio)`` original pixels is cut and the final resize to ``out_size`` does the
    enlargement (same geometry, up to rounding of the window side): the output is a square window
    that is ``out_size`` wide only after that resize. Images without faces pass through unchanged.

    Args:
        out_size: side of the network input (the final resize target), pixels.
        anchor_sizes: anchor sides, ascending (paper 4.1 "Anchor Design": 16-512).
        jitter: log2 half-range of the random factor applied to the target size (0 = none).
        fill: padding colour, RGB 0-255.
    """

    def __init__(
        self,
        out_size: int = 640,
        anchor_sizes: Sequence[float] = DEFAULT_ANCHOR_SIZES,
        jitter: float = 0.0,
        fill: Sequence[float] = DEFAULT_MEAN,
    ) -> None:
        super().__init__(fill)
        sizes = [float(a) for a in anchor_sizes]
        if not sizes or any(a <= 0 for a in sizes) or sorted(sizes) != sizes:
            raise ValueError(f"anchor_sizes must be positive and ascending, got {tuple(anchor_sizes)}")
        if out_size < 1:
            raise ValueError(f"out_size must be >= 1, got {out_size}")
        if jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {jitter}")
        self.out_size = int(out_size)
        self.anchor_sizes = sizes
        self.jitter = float(jitter)
        # anchors that fit in the output window (at least the smallest one)
        self._targets = [a for a in sizes if a <= out_size] or sizes[:1]

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        (h, w), boxes = _find(flat_inputs)
        if boxes is None:
            return {}
        valid = torch.nonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).flatten()
        if valid.numel() == 0:
            return {}
        face_idx = int(valid[_randint(0, valid.numel() - 1)])
        fx1, fy1, fx2, fy2 = (float(v) for v in boxes[face_idx])
        face_side = math.sqrt((fx2 - fx1) * (fy2 - fy1))

        nearest = min(range(len(self.anchor_sizes)), key=lambda i: abs(self.anchor_sizes[i] - face_side))
        last = min(nearest + 1, len(self._targets) - 1)
        target = self._targets[_randint(0, last)]
        if self.jitter > 0:
            target = min(target * 2.0 ** _uniform(-self.jitter, self.jitter), float(self.out_size))
        ratio = target / face_side

        # Shrink the image now when the face must shrink; otherwise cut a smaller window and let the
        # final resize enlarge it (no huge intermediate images).
        pre = min(ratio, 1.0)
        new_h, new_w = max(1, round(h * pre)), max(1, round(w * pre))
        sx, sy = new_w / w, new_h / h
        side = max(1, round(self.out_size * pre / ratio))
        rb = boxes * torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype)
        fx1, fy1, fx2, fy2 = (float(v) for v in rb[face_idx])
        left = self._offset(fx1, fx2, side)
        top = self._offset(fy1, fy2, side)
        keep = _centres_inside(rb, left, top, left + side, top + side)
        keep[face_idx] = True
        return {
            "resize": (new_h, new_w) if (new_h, new_w) != (h, w) else None,
            "top": top,
            "left": left,
            "side": side,
            "keep": keep,
            "canvas": (new_h, new_w),
        }

    @staticmethod
    def _offset(lo: float, hi: float, side: int) -> int:
        """Window start so that [start, start + side] contains [lo, hi], uniformly at random."""
        first, last = math.ceil(hi - side), math.floor(lo)
        if first <= last:
            return _randint(first, last)
        return round(0.5 * (lo + hi) - 0.5 * side)  # face wider than the window: centre on it

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params:
            return inpt
        if params["resize"] is not None:
            inpt = self._call_kernel(F.resize, inpt, size=list(params["resize"]), antialias=True)
        s = params["side"]
        out = self._crop(inpt, params["top"], params["left"], s, s, params["canvas"])
        return self._drop_outside(out, params["keep"])


class PhotometricDistort(v2.RandomPhotometricDistort):
    """``v2.RandomPhotometricDistort`` (SSD colour distortion, paper 4.1 (1)) with a fast hue step.

    Same parameters, random draws and order of operations as v2; only the hue kernel differs for
    uint8 images: v2's ``adjust_hue`` converts to float HSV in torch (about 120 ms for an 896x504
    image on one core, more than the rest of the pipeline together), OpenCV's uint8 HSV round trip
    takes a few ms and agrees within a few grey levels (hue shift quantised to 1/256 turn).
    """

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["hue_factor"] is None or not _is_image(inpt) or inpt.dtype != torch.uint8:
            return super().transform(inpt, params)
        before = {**params, "hue_factor": None, "channel_permutation": None}
        if not params["contrast_before"]:
            before["contrast_factor"] = None  # v2 applies it after the hue
        inpt = super().transform(inpt, before)
        inpt = _shift_hue_uint8(inpt, params["hue_factor"])
        after = {
            "brightness_factor": None,
            "contrast_factor": None if params["contrast_before"] else params["contrast_factor"],
            "saturation_factor": None,
            "hue_factor": None,
            "contrast_before": False,
            "channel_permutation": params["channel_permutation"],
        }
        return super().transform(inpt, after)


def _shift_hue_uint8(image: torch.Tensor, hue_factor: float) -> torch.Tensor:
    """Rotate the hue of a uint8 ``(3, H, W)`` RGB image by ``hue_factor`` turns (OpenCV HSV)."""
    hwc = np.ascontiguousarray(image.as_subclass(torch.Tensor).permute(1, 2, 0).numpy())
    hsv = cv2.cvtColor(hwc, cv2.COLOR_RGB2HSV_FULL)  # H in 0..255 for a full turn
    hsv[..., 0] += np.uint8(round(hue_factor * 256) % 256)  # uint8 addition wraps around
    out = torch.from_numpy(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)).permute(2, 0, 1).contiguous()
    return tv_tensors.wrap(out, like=image) if isinstance(image, tv_tensors.TVTensor) else out


# --------------------------------------------------------------------------------------------------
# pipelines
# --------------------------------------------------------------------------------------------------


class _SeededTransform:
    """Base of the public pipelines: input checks, optional private RNG, plain-tensor output."""

    def __init__(self, seed: int | None = None, generator: torch.Generator | None = None) -> None:
        if seed is not None and generator is not None:
            raise ValueError("give either seed or generator, not both")
        if seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        self.generator = generator
        self._pipeline: v2.Transform = v2.Identity()

    def manual_seed(self, seed: int) -> None:
        """(Re)seed the private generator (created if absent); used by ``worker_init_fn``."""
        self.generator = torch.Generator().manual_seed(int(seed) % (2**63))

    @contextlib.contextmanager
    def _rng(self) -> Iterator[None]:
        # v2 transforms draw from torch's global RNG. With a private generator, run them on a forked
        # global RNG seeded from it: reproducible, and the caller's global RNG stays untouched.
        if self.generator is None:
            yield
            return
        seed = int(torch.randint(0, 2**62, (), generator=self.generator))
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield

    def __call__(
        self, image: torch.Tensor | np.ndarray, boxes: torch.Tensor | np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform one sample.

        Args:
            image: uint8 tensor ``(3, H, W)`` RGB (or ``tv_tensors.Image``).
            boxes: ``(N, 4)`` float x1, y1, x2, y2 in pixels of ``image``.

        Returns:
            uint8 tensor ``(3, size, size)`` and float32 boxes ``(M, 4)`` inside the output image,
            each at least ``min_size`` px wide and high.
        """
        img, bxs = to_tv_tensors(image, boxes)
        with self._rng():
            out_img, out_boxes = self._pipeline(img, bxs)
        return (
            out_img.as_subclass(torch.Tensor).contiguous(),
            out_boxes.as_subclass(torch.Tensor).reshape(-1, 4).to(torch.float32).contiguous(),
        )


def _finish(size: int, min_size: float) -> list[v2.Transform]:
    return [
        v2.Resize((size, size), antialias=True),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=min_size, min_area=min_size * min_size, labels_getter=None),
    ]


class TrainTransform(_SeededTransform):
    """ACFD training augmentation (paper section 4.1 "Data Augmentation").

    Colour distortion, then ONE of expansion / square crop / data-anchor-sampling (or nothing, with
    the remaining probability), then a horizontal flip and a resize to ``size x size``. Boxes are
    clipped to the image; boxes narrower or lower than ``min_size`` px are dropped. An image without
    faces works (data-anchor-sampling then leaves it as it is).

    Args:
        size: output side (paper: 640).
        mean: RGB padding colour, 0-255 (the normalisation mean, so padding becomes 0).
        expand_max_ratio: largest expansion ratio (paper 4.1 (b): [1, 4]).
        p_expand: probability of the expansion branch (small faces).
        p_crop: probability of the square-crop branch (large faces, paper 4.1 (c)).
        p_anchor_sampling: probability of data-anchor-sampling (paper 4.1 (d), PyramidBox).
        anchor_sizes: anchor sides for data-anchor-sampling (paper 4.1 "Anchor Design").
        flip_p: horizontal flip probability.
        photometric: apply :class:`PhotometricDistort` (``v2.RandomPhotometricDistort``; paper
            4.1 (1) "color distort").
        crop_min_scale: smallest crop side as a fraction of the short image side (S3FD: 0.3).
        anchor_jitter: log2 jitter of the anchor-sampling target (PyramidBox: 1.0; default 0).
        min_size: smallest box side kept, output pixels.
        seed: seed of a private ``torch.Generator`` (default: torch's global RNG).
        generator: a ``torch.Generator`` to draw from instead of ``seed``.

    Raises:
        ValueError: a probability outside [0, 1], branch probabilities summing above 1, or a bad
            size / ratio.
    """

    def __init__(
        self,
        size: int = 640,
        mean: Sequence[float] = DEFAULT_MEAN,
        expand_max_ratio: float = 4.0,
        p_expand: float = 0.5,
        p_crop: float = 0.25,
        p_anchor_sampling: float = 0.25,
        anchor_sizes: Sequence[float] = DEFAULT_ANCHOR_SIZES,
        flip_p: float = 0.5,
        photometric: bool = True,
        crop_min_scale: float = 0.3,
        anchor_jitter: float = 0.0,
        min_size: float = 2.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(seed=seed, generator=generator)
        if int(size) < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if len(mean) != 3:
            raise ValueError(f"mean must have 3 values (R, G, B), got {tuple(mean)}")
        if expand_max_ratio < 1.0:
            raise ValueError(f"expand_max_ratio must be >= 1, got {expand_max_ratio}")
        probs = {
            "p_expand": p_expand,
            "p_crop": p_crop,
            "p_anchor_sampling": p_anchor_sampling,
            "flip_p": flip_p,
        }
        for name, p in probs.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        p_none = 1.0 - (p_expand + p_crop + p_anchor_sampling)
        if p_none < -1e-9:
            raise ValueError(
                f"p_expand + p_crop + p_anchor_sampling must be <= 1 (one branch per image), "
                f"got {p_expand} + {p_crop} + {p_anchor_sampling}"
            )
        self.size = int(size)
        self.mean = tuple(float(m) for m in mean)
        self.min_size = float(min_size)
        fill = [int(round(m)) for m in self.mean]

        steps: list[v2.Transform] = []
        if photometric:
            steps.append(PhotometricDistort(p=0.5))
        branches: list[v2.Transform] = [
            v2.RandomZoomOut(
                fill={tv_tensors.Image: fill, "others": 0}, side_range=(1.0, expand_max_ratio), p=1.0
            ),
            RandomSquareCrop(min_scale=crop_min_scale, fill=self.mean),
            DataAnchorSampling(
                out_size=self.size, anchor_sizes=anchor_sizes, jitter=anchor_jitter, fill=self.mean
            ),
            v2.Identity(),
        ]
        weights = [p_expand, p_crop, p_anchor_sampling, max(0.0, p_none)]
        chosen = [(t, p) for t, p in zip(branches, weights, strict=True) if p > 0]
        if chosen:
            steps.append(v2.RandomChoice([t for t, _ in chosen], p=[p for _, p in chosen]))
        if flip_p > 0:
            steps.append(v2.RandomHorizontalFlip(p=flip_p))
        steps += _finish(self.size, self.min_size)
        self._pipeline = v2.Compose(steps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, pipeline={self._pipeline!r})"


class EvalTransform(_SeededTransform):
    """Validation transform: resize to ``size x size`` only (paper 4.1: 640x640 inputs).

    Args:
        size: output side.
        min_size: boxes smaller than this (output px) are dropped; 1.0 keeps all but degenerate ones.
    """

    def __init__(self, size: int = 640, min_size: float = 1.0) -> None:
        super().__init__()
        if int(size) < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = int(size)
        self.min_size = float(min_size)
        self._pipeline = v2.Compose(_finish(self.size, self.min_size))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class FastTrainTransform:
    """The CPU training recipe's augmentation: one resize + paste instead of a chain of v2 steps.

    Hand-written because on a 2-core CPU the v2 chain (photometric distortion, expansion canvas,
    crop, flip, resize, each a full-image pass on tensors) costs more than the network of acfd-n: the
    data path, not the model, set the old trainer's pace (~5 images/s). Here the paper's expansion
    (zoom out) and crop (zoom in) of section 4.1 become one random zoom ``s`` drawn log-uniformly
    from ``zoom_range`` *relative to the input as cached* (``s = 1`` keeps the cached pixel scale,
    which the training config sets to the evaluation scale, so faces are seen at the sizes met at test
    time; ``s < 1`` expands, ``s > 1`` crops). A ``size x size`` window of ``size / s`` source pixels
    is placed at random (on a random face's centre with probability ``face_p``), only the part of the
    image inside it is resized (INTER_AREA down, INTER_LINEAR up) and pasted on a mean-coloured
    canvas, then flipped and colour-jittered (brightness, contrast, saturation) on the small canvas.
    Faces whose centre leaves the window are dropped, the others clipped; faces under ``min_size``
    output pixels are dropped.

    Takes and returns what :class:`TrainTransform` does, and also takes a NumPy ``(H, W, 3)`` image
    (the fast path: :class:`~acfd.data.dataset.DetectionDataset` then skips the tensor conversion).

    Args:
        size: output side.
        zoom_range: (min, max) scale factor, output pixels per input pixel.
        face_p: probability of centring the window on a random face.
        flip_p: horizontal flip probability.
        photometric_p: probability of colour jitter.
        brightness: largest brightness shift, 0-255 scale.
        contrast: contrast factor range.
        saturation: saturation factor range.
        mean: RGB padding colour.
        min_size: smallest box side kept, output pixels.
        seed: seed of the private NumPy generator.
    """

    accepts_numpy = True

    def __init__(
        self,
        size: int = 384,
        zoom_range: Sequence[float] = (0.5, 1.5),
        face_p: float = 0.5,
        flip_p: float = 0.5,
        photometric_p: float = 0.5,
        brightness: float = 32.0,
        contrast: Sequence[float] = (0.6, 1.4),
        saturation: Sequence[float] = (0.6, 1.4),
        mean: Sequence[float] = DEFAULT_MEAN,
        min_size: float = 2.0,
        seed: int | None = None,
    ) -> None:
        if int(size) < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        lo, hi = (float(v) for v in zoom_range)
        if not 0 < lo <= hi:
            raise ValueError(f"zoom_range must be 0 < min <= max, got {tuple(zoom_range)}")
        for name, p in (("face_p", face_p), ("flip_p", flip_p), ("photometric_p", photometric_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        self.size = int(size)
        self.zoom_range = (lo, hi)
        self.face_p, self.flip_p, self.photometric_p = face_p, flip_p, photometric_p
        self.brightness = float(brightness)
        self.contrast = tuple(float(v) for v in contrast)
        self.saturation = tuple(float(v) for v in saturation)
        self.fill = np.array([round(m) for m in mean], np.uint8)
        self.min_size = float(min_size)
        self.rng = np.random.default_rng(seed)

    def manual_seed(self, seed: int) -> None:
        """Reseed the private generator (per sample, from the trainer's epoch-seeded dataset)."""
        self.rng = np.random.default_rng(int(seed) % (2**63))

    def _window_start(self, extent: int, side: float, centre: float | None) -> float:
        if centre is not None:
            return centre - side * self.rng.uniform(0.2, 0.8)
        lo, hi = min(0.0, extent - side), max(0.0, extent - side)
        return self.rng.uniform(lo, hi)

    def __call__(
        self, image: torch.Tensor | np.ndarray, boxes: torch.Tensor | np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(image, torch.Tensor):
            img, bxs = to_tv_tensors(image, boxes)
            array = img.permute(1, 2, 0).numpy()
            boxes = bxs.as_subclass(torch.Tensor).numpy()
        else:
            array = image
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ValueError(f"image must be uint8 (H, W, 3), got {array.dtype} {array.shape}")
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        h, w = array.shape[:2]
        rng, out = self.rng, self.size
        scale = math.exp(rng.uniform(math.log(self.zoom_range[0]), math.log(self.zoom_range[1])))
        side = out / scale
        centre = None
        if len(boxes) and rng.random() < self.face_p:
            b = boxes[rng.integers(len(boxes))]
            centre = (0.5 * (b[0] + b[2]), 0.5 * (b[1] + b[3]))
        left = self._window_start(w, side, None if centre is None else centre[0])
        top = self._window_start(h, side, None if centre is None else centre[1])

        canvas = np.empty((out, out, 3), np.uint8)
        canvas[:] = self.fill
        x0, y0 = max(0, math.floor(left)), max(0, math.floor(top))
        x1, y1 = min(w, math.ceil(left + side)), min(h, math.ceil(top + side))
        ox0, oy0 = round((x0 - left) * scale), round((y0 - top) * scale)
        ox1, oy1 = min(out, round((x1 - left) * scale)), min(out, round((y1 - top) * scale))
        ox0, oy0 = max(0, ox0), max(0, oy0)
        if x1 > x0 and y1 > y0 and ox1 > ox0 and oy1 > oy0:
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            canvas[oy0:oy1, ox0:ox1] = cv2.resize(array[y0:y1, x0:x1], (ox1 - ox0, oy1 - oy0), interpolation=interp)
            sx, sy = (ox1 - ox0) / (x1 - x0), (oy1 - oy0) / (y1 - y0)
            boxes = (boxes - [x0, y0, x0, y0]) * [sx, sy, sx, sy] + [ox0, oy0, ox0, oy0]
        else:
            boxes = boxes[:0]
        cx, cy = 0.5 * (boxes[:, 0] + boxes[:, 2]), 0.5 * (boxes[:, 1] + boxes[:, 3])
        inside = (cx >= 0) & (cx < out) & (cy >= 0) & (cy < out)
        boxes = np.clip(boxes[inside], 0, out)
        if rng.random() < self.flip_p:
            canvas = np.ascontiguousarray(canvas[:, ::-1])
            boxes = F.horizontal_flip_bounding_boxes(
                torch.from_numpy(boxes), format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=(out, out)
            ).numpy()
        if rng.random() < self.photometric_p:
            canvas = self._jitter(canvas)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= self.min_size) & ((boxes[:, 3] - boxes[:, 1]) >= self.min_size)
        tensor = torch.from_numpy(canvas).permute(2, 0, 1).contiguous()
        return tensor, torch.from_numpy(np.ascontiguousarray(boxes[keep], np.float32)).reshape(-1, 4)

    def _jitter(self, canvas: np.ndarray) -> np.ndarray:
        rng = self.rng
        alpha = rng.uniform(*self.contrast)
        beta = rng.uniform(-self.brightness, self.brightness)
        canvas = cv2.convertScaleAbs(canvas, alpha=alpha, beta=beta)
        sat = rng.uniform(*self.saturation)
        gray = cv2.cvtColor(cv2.cvtColor(canvas, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        return cv2.addWeighted(canvas, sat, gray, 1.0 - sat, 0.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, zoom_range={self.zoom_range})"
