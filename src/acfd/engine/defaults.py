"""Test-time defaults of the detector, in a module without heavy imports so that the CLI and the
service can show them in ``--help`` without loading torch (``acfd.engine.infer`` re-exports them)."""

from __future__ import annotations

#: The paper's multi-scale test (4.1 "Inference"): exact ``height x width`` resizes.
PAPER_SCALES: tuple[str, ...] = ("480x645", "640x860", "800x1075")
#: Interactive default: one scale, aspect ratio kept, longer side 640: the shipped acfd-n's best
#: single scale on the dev split (AP50 51.2 vs 49.9 at 480, 44.9 at 800; docs/MODEL_CARD.md), 50 ms/image.
DEFAULT_SCALES: tuple[str, ...] = ("640",)
#: Score threshold for interactive use: the shipped acfd-n's best-F1 threshold at the default scale
#: on the dev split (0.476: precision 0.69, recall 0.46), rounded.
DEFAULT_SCORE_THRESH = 0.48
#: The paper's score threshold for evaluation / submissions (AP needs the low-score tail).
EVAL_SCORE_THRESH = 0.08

__all__ = ["DEFAULT_SCALES", "DEFAULT_SCORE_THRESH", "EVAL_SCORE_THRESH", "PAPER_SCALES"]
