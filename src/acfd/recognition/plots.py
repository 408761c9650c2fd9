"""CMC and ROC curves of the recognition protocols (matplotlib Agg, no pyplot state), atomic PNGs."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from acfd.recognition.protocols import RecognitionReport
from acfd.utils import atomic_path


def _save(fig: Figure, out: Path) -> Path:
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out


def plot_curves(report: RecognitionReport, out_dir: str | os.PathLike[str], label: str = "model") -> tuple[Path, Path]:
    """Write ``cmc.png`` (rank-k identification accuracy) and ``roc.png`` (verification) in ``out_dir``."""
    out = Path(out_dir)
    ident, ver = report.identification, report.verification
    fig = Figure(figsize=(5, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ks = list(range(1, len(ident.cmc) + 1))
    ax.plot(ks, [100 * v for v in ident.cmc], marker="o", label=f"{label} (rank-1 {100 * ident.rank(1):.1f}%)")
    ax.set_xlabel("rank k")
    ax.set_ylabel("identification accuracy (%)")
    ax.set_ylim(0, 101)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(f"CMC ({report.num_distractors} distractors)")
    cmc = _save(fig, out / "cmc.png")
    fig = Figure(figsize=(5, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(ver.fpr, ver.tpr, label=f"{label} (AUC {ver.auc:.3f})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(f"ROC ({ver.num_positive}+{ver.num_negative} pairs)")
    return cmc, _save(fig, out / "roc.png")
