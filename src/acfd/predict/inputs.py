"""What :class:`~acfd.predict.detector.Detector` accepts as an image, turned into the one form the
pipeline works on: an ``(H, W, 3)`` uint8 RGB array."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Union

import cv2
import numpy as np
from PIL import Image

from acfd.data.image_io import load_image, pil_to_rgb

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _is_tensor(value: Any) -> bool:
    """Whether ``value`` is a torch tensor, without importing torch (whoever made one has loaded it)."""
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")

#: Anything :meth:`Detector.__call__` accepts as one image.
ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, "torch.Tensor"]


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
        return pil_to_rgb(image)  # the conversions of load_image: EXIF, 16-bit, alpha onto white
    if _is_tensor(image):
        import torch

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


def is_batch(images: Any) -> bool:
    """Whether a :meth:`Detector.__call__` argument is several images: a list or tuple, or a
    4-D array / tensor."""
    if isinstance(images, (list, tuple)):
        return True
    return (isinstance(images, np.ndarray) or _is_tensor(images)) and images.ndim == 4


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` resized to ``(height, width)``: area interpolation to shrink, bilinear to enlarge."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrink = h * w < image.shape[0] * image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


__all__ = ["ImageInput", "as_rgb_array", "is_batch", "resize"]
