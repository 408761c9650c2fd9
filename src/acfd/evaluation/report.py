"""Text and JSON reports of an evaluation (official AP50, COCO metrics, per-subset breakdown)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from acfd.evaluation.coco import COCO_METRIC_KEYS
from acfd.evaluation.errors import ERROR_KINDS, ErrorAnalysis
from acfd.evaluation.icartoonface import OfficialResult

#: Row labels of the breakdown table.
SUBSET_LABELS = {
    "all": "all faces",
    "small": "small (sqrt(wh)<32px)",
    "extreme_aspect": "aspect h/w>2 or <0.5",
    "other": "other",
}


def pct(x: float | None) -> str:
    """A fraction as a percentage with 2 decimals (``0.8731 -> "87.31"``), ``"n/a"`` if undefined."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100.0 * x:.2f}"


def pct_sign(x: float | None) -> str:
    """:func:`pct` with its unit: ``0.8731 -> "87.31%"`` (``"n/a"`` if undefined)."""
    text = pct(x)
    return text if text == "n/a" else text + "%"


def format_report(
    official: OfficialResult,
    breakdown: Mapping[str, OfficialResult] | None = None,
    coco: Mapping[str, float] | None = None,
    errors: ErrorAnalysis | None = None,
) -> list[str]:
    """Lines of the text report.

    Args:
        official: result of ``evaluate_official``.
        breakdown: result of ``evaluate_breakdown`` (table rows), or None.
        coco: result of ``coco_metrics``, or None.
        errors: result of ``evaluate_errors`` (where the AP50 is lost), or None.

    Returns:
        Lines; the headline is exactly ``"AP50 <percent, 2 decimals>%"`` (e.g. ``"AP50 87.31%"``);
        the tables' columns of percentages say ``%`` in their heading.
    """
    lines = [
        f"AP50 {pct_sign(official.ap)}",
        f"recall {pct_sign(official.max_recall)} (faces {official.num_gt}, detections {official.num_det}, "
        f"tp {official.tp}, fp {official.fp})",
    ]
    if coco is not None:
        lines.append("COCO " + "  ".join(f"{k} {pct_sign(coco.get(k))}" for k in COCO_METRIC_KEYS))
    if breakdown:
        lines.append(f"{'subset':<22} {'faces':>7} {'dets':>7} {'AP50 %':>7} {'recall %':>8}")
        for name, res in breakdown.items():
            label = SUBSET_LABELS.get(name, name)
            lines.append(
                f"{label:<22} {res.num_gt:>7d} {res.num_det:>7d} {pct(res.ap):>7} {pct(res.max_recall):>8}"
            )
    if errors is not None:
        lines.append(f"{'error (fixed alone)':<22} {'count':>7} {'AP50 %':>7} {'gain %':>8}")
        for kind in ERROR_KINDS:
            gain = errors.gain(kind)
            gain_txt = "n/a" if math.isnan(gain) else f"{100.0 * gain:+.2f}"
            unit = "faces" if kind == "missed" else "dets"
            lines.append(
                f"{kind + ' (' + unit + ')':<22} {errors.counts[kind]:>7d} {pct(errors.fixed_ap[kind]):>7} {gain_txt:>8}"
            )
    return lines


def _clean(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def report_dict(
    official: OfficialResult,
    breakdown: Mapping[str, OfficialResult] | None = None,
    coco: Mapping[str, float] | None = None,
    errors: ErrorAnalysis | None = None,
    **meta: Any,
) -> dict[str, Any]:
    """JSON-friendly report: fractions in [0, 1], undefined values as ``None``.

    Args:
        official: result of ``evaluate_official``.
        breakdown: result of ``evaluate_breakdown``, or None.
        coco: result of ``coco_metrics``, or None.
        errors: result of ``evaluate_errors``, or None.
        **meta: extra top-level fields (input paths, problems...).

    Returns:
        ``{"ap50", "official", "breakdown", "coco", "errors", **meta}``.
    """
    return {
        "ap50": _clean(float(official.ap)),
        "official": official.summary(),
        "breakdown": None if breakdown is None else {k: v.summary() for k, v in breakdown.items()},
        "coco": None if coco is None else {k: _clean(float(v)) for k, v in coco.items()},
        "errors": None if errors is None else errors.summary(),
        **meta,
    }
