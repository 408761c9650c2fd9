"""Precision-recall curves of official-protocol results (matplotlib, Agg backend, no pyplot state)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from acfd.evaluation.icartoonface import OfficialResult
from acfd.utils import atomic_path


def _envelope(precision: np.ndarray) -> np.ndarray:
    """Monotone precision envelope (what the VOC AP integrates)."""
    return np.maximum.accumulate(precision[::-1])[::-1] if precision.size else precision


def pr_curve_figure(
    results: Mapping[str, OfficialResult] | OfficialResult, title: str | None = None
) -> Figure:
    """Build the PR-curve figure: one step curve per result, AP50 (in %) in the legend.

    Args:
        results: one result, or name -> result (one curve each, legend ``"<name> (AP50 xx.xx)"``).
        title: optional axes title.

    Returns:
        A matplotlib Figure with an Agg canvas attached.
    """
    if isinstance(results, OfficialResult):
        results = {"detector": results}
    if not results:
        raise ValueError("plot_pr_curve: no result to plot")
    fig = Figure(figsize=(5.5, 5.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, res in results.items():
        ap = "n/a" if np.isnan(res.ap) else f"{100.0 * res.ap:.2f}"
        env = _envelope(np.asarray(res.precision, dtype=np.float64))
        recall = np.nan_to_num(np.concatenate(([0.0], res.recall)))
        precision = np.concatenate((env[:1], env))  # precision env[i] holds on (r[i-1], r[i]]
        ax.step(recall, precision, where="pre", label=f"{name} (AP50 {ap})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (envelope)")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(title or "iCartoonFace official protocol, IoU 0.5")
    fig.tight_layout()
    return fig


def plot_pr_curve(
    results: Mapping[str, OfficialResult] | OfficialResult,
    out_path: str | os.PathLike[str],
    title: str | None = None,
) -> Path:
    """Write a PR-curve PNG (AP50 in the legend), atomically.

    Args:
        results: one result, or name -> result (official protocol, see ``evaluate_official``).
        out_path: destination PNG.
        title: optional axes title.

    Returns:
        ``out_path`` as a Path.
    """
    out = Path(out_path)
    fig = pr_curve_figure(results, title)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out
