"""Test scales and their mini-language: ``640x860`` (an exact resize), ``960`` (the longer side),
``paper`` (the paper's three), with per-scale options ``:max<N>`` and ``:noflip``.

No heavy imports: the command line parses scales before it loads torch.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from acfd.detection.protocol import PAPER_SCALES

#: Largest side of a test scale in pixels. The network input (and its memory: several GB for
#: acfd-l at 4096x4096) grows with its area, so larger scales are refused with a clear error
#: instead of an allocation failure (the decoder's ``max_pixels`` plays the same role for files).
MAX_SCALE_SIDE = 4096

_SCALE_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


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
        if isinstance(spec, numbers.Integral):
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


def parse_scales(spec: str | int | Scale | Iterable[str | int | Sequence[int] | Scale]) -> tuple[Scale, ...]:
    """Parse a list of test scales.

    Args:
        spec: ``"paper"`` (the paper's ``480x645,640x860,800x1075``), a comma-separated string
            (``"640x860,960:max128"``), a list of scale specs (see :meth:`Scale.parse`), one
            :class:`Scale` or longer side, or one ``(height, width)`` tuple of two ints.

    Raises:
        ValueError: an invalid or empty spec.
    """
    if spec is None:
        raise ValueError("no test scales given")
    if isinstance(spec, (numbers.Integral, Scale)):
        spec = [spec]
    if isinstance(spec, str):
        key = spec.strip().lower()
        spec = PAPER_SCALES if key == "paper" else [s for s in spec.split(",") if s.strip()]
    elif isinstance(spec, tuple) and len(spec) == 2 and all(isinstance(v, int) for v in spec):
        spec = [spec]  # one (h, w) pair
    scales = tuple(Scale.parse(s) for s in spec)
    if not scales:
        raise ValueError("no test scales given")
    return scales


__all__ = ["MAX_SCALE_SIDE", "PAPER_SCALES", "Scale", "parse_scales"]
