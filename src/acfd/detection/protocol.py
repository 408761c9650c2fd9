"""The ACFD paper's inference protocol (4.1 "Inference"), as constants without heavy imports.

Each image is resized to every test scale, each scale keeps its top :data:`PAPER_TOPK` boxes whose
score is above :data:`PAPER_SCORE_THRESH`, all scales are merged by NMS at :data:`PAPER_NMS_THRESH`
and the top :data:`PAPER_MAX_DET` boxes are kept. The ``paper`` inference preset
(:mod:`acfd.predict.presets`) is this protocol.
"""

from __future__ import annotations

#: The paper's test scales: exact ``height x width`` resizes.
PAPER_SCALES: tuple[str, ...] = ("480x645", "640x860", "800x1075")
#: Raw network score a box must exceed to be kept (AP needs the low-score tail).
PAPER_SCORE_THRESH = 0.08
#: NMS IoU threshold, within and across scales.
PAPER_NMS_THRESH = 0.55
#: Boxes kept per scale before NMS, and per image after it.
PAPER_TOPK = 1000
PAPER_MAX_DET = 100

__all__ = ["PAPER_MAX_DET", "PAPER_NMS_THRESH", "PAPER_SCALES", "PAPER_SCORE_THRESH", "PAPER_TOPK"]
