"""Dataset statistics and plots, like the iCartoonFace paper's and the ACFD slides' dataset analysis:
faces per image, face size, and face aspect ratio (height / width) with its long tails.

The ACFD paper notes that about 10% of cartoon faces have h/w > 2 or < 0.5; ``dataset_stats``
reports those fractions and ``plot_stats`` marks them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from acfd.data.formats import ImageRecord
from acfd.utils import atomic_path

logger = logging.getLogger(__name__)

#: Aspect-ratio (h / w) tails counted and marked: elongated faces below / above these.
ASPECT_LOW, ASPECT_HIGH = 0.5, 2.0
#: Face-size bins (sqrt(w*h), pixels), COCO-like: tiny < 16 <= small < 32 <= medium < 96 <= large.
SIZE_BINS = (16.0, 32.0, 96.0)


def _records_list(records: Mapping[str, ImageRecord] | Iterable[ImageRecord]) -> list[ImageRecord]:
    return list(records.values()) if isinstance(records, Mapping) else list(records)


def _all_boxes(recs: list[ImageRecord]) -> np.ndarray:
    if not recs:
        return np.zeros((0, 4), np.float64)
    return np.concatenate([r.boxes.astype(np.float64).reshape(-1, 4) for r in recs], axis=0)


def _face_dims(recs: list[ImageRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Width, height and size ``sqrt(w * h)`` of every non-degenerate face box."""
    boxes = _all_boxes(recs)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    valid = (w > 0) & (h > 0)
    w, h = w[valid], h[valid]
    return w, h, np.sqrt(w * h)


def _summary(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    q = np.percentile(values, [5, 25, 50, 75, 95])
    return {
        "min": float(values.min()),
        "p5": float(q[0]),
        "p25": float(q[1]),
        "median": float(q[2]),
        "p75": float(q[3]),
        "p95": float(q[4]),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }


def dataset_stats(records: Mapping[str, ImageRecord] | Iterable[ImageRecord]) -> dict:
    """Summary numbers of a set of annotations (JSON-serialisable).

    Args:
        records: the annotations (a reader's mapping or an iterable of records).

    Returns:
        ``num_images``, ``num_images_with_faces``, ``num_faces``, ``faces_per_image`` (mean, max,
        ``histogram`` {count: images}), ``face_size`` (sqrt(w*h) summary), ``face_width``,
        ``face_height``, ``aspect_ratio`` (h/w summary, ``frac_below_0.5``, ``frac_above_2``,
        ``frac_tails``), ``size_bins`` (tiny/small/medium/large counts) and, when image sizes
        are known, ``relative_face_size`` (sqrt(w*h / (W*H)) summary).
    """
    recs = _records_list(records)
    counts = np.array([len(r) for r in recs], dtype=np.int64)
    w, h, size = _face_dims(recs)
    aspect = h / w if w.size else np.zeros(0)
    hist = {int(k): int(v) for k, v in zip(*np.unique(counts, return_counts=True))} if counts.size else {}
    n = int(aspect.size)
    low = int(np.sum(aspect < ASPECT_LOW))
    high = int(np.sum(aspect > ASPECT_HIGH))
    out: dict = {
        "num_images": len(recs),
        "num_images_with_faces": int(np.sum(counts > 0)),
        "num_faces": int(counts.sum()),
        "faces_per_image": {
            "mean": float(counts.mean()) if counts.size else 0.0,
            "max": int(counts.max()) if counts.size else 0,
            "histogram": hist,
        },
        "face_size": _summary(size),
        "face_width": _summary(w),
        "face_height": _summary(h),
        "aspect_ratio": {
            **_summary(aspect),
            f"frac_below_{ASPECT_LOW:g}": low / n if n else 0.0,
            f"frac_above_{ASPECT_HIGH:g}": high / n if n else 0.0,
            "frac_tails": (low + high) / n if n else 0.0,
        },
        "size_bins": {
            "tiny": int(np.sum(size < SIZE_BINS[0])),
            "small": int(np.sum((size >= SIZE_BINS[0]) & (size < SIZE_BINS[1]))),
            "medium": int(np.sum((size >= SIZE_BINS[1]) & (size < SIZE_BINS[2]))),
            "large": int(np.sum(size >= SIZE_BINS[2])),
        },
    }
    rel = [
        np.sqrt(np.clip((r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1]), 0, None)
                / float(r.width * r.height))
        for r in recs
        if r.width and r.height and len(r)
    ]
    if rel:
        out["relative_face_size"] = _summary(np.concatenate(rel).astype(np.float64))
    return out


def _save(fig: object, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)  # type: ignore[attr-defined]
    return path


def _log_ticks(ax: object, lo: float, hi: float) -> None:
    """Readable ticks on a log x axis: 1-2-5 steps labelled as plain numbers, minor ticks unlabelled
    (matplotlib's default labels the minor ticks too, and they overlap)."""
    from matplotlib.ticker import NullFormatter

    ticks = [m * 10**e for e in range(-1, 6) for m in (1, 2, 5) if lo <= m * 10**e <= hi]
    if len(ticks) > 8:  # wide ranges: powers of ten only
        ticks = [t for t in ticks if f"{t:g}".lstrip("0.").startswith("1")]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_stats(
    records: Mapping[str, ImageRecord] | Iterable[ImageRecord], out_dir: str | os.PathLike[str]
) -> list[Path]:
    """Write dataset plots as PNGs (matplotlib, no display needed).

    Files: ``faces_per_image.png`` (histogram), ``face_size.png`` (sqrt(w*h), width and height
    distributions, log scale), ``aspect_ratio.png`` (h/w distribution on a log axis with the
    < 0.5 and > 2 tails shaded and their share written) and, when image sizes are known,
    ``relative_face_size.png``.

    Args:
        records: the annotations.
        out_dir: output folder (created).

    Returns:
        The PNG files written.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    from matplotlib.ticker import NullFormatter

    recs = _records_list(records)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats = dataset_stats(recs)
    w, h, size = _face_dims(recs)
    written: list[Path] = []

    # faces per image
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    hist = stats["faces_per_image"]["histogram"]
    ks = sorted(hist)
    ax.bar(ks, [hist[k] for k in ks], color="tab:blue")
    ax.set_xlabel("faces per image")
    ax.set_ylabel("images")
    ax.set_title(f"{stats['num_images']} images, {stats['num_faces']} faces "
                 f"(mean {stats['faces_per_image']['mean']:.2f} per image)")
    if ks:
        ax.set_xticks(ks if len(ks) <= 20 else ks[:: max(1, len(ks) // 20)])
    fig.tight_layout()
    written.append(_save(fig, out / "faces_per_image.png"))

    # face size
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    if size.size:
        bins = np.geomspace(max(1.0, float(min(size.min(), w.min(), h.min()))),
                            float(max(size.max(), w.max(), h.max())) + 1, 40)
        axes[0].hist(size, bins=bins, color="tab:blue")
        axes[1].hist(w, bins=bins, alpha=0.6, label="width", color="tab:orange")
        axes[1].hist(h, bins=bins, alpha=0.6, label="height", color="tab:green")
        axes[1].legend()
        for i, edge in enumerate(SIZE_BINS):  # the size groups of the evaluation breakdown
            axes[0].axvline(edge, color="gray", ls="--", lw=1,
                            label="size groups of the eval breakdown" if i == 0 else None)
        axes[0].legend(loc="upper right", fontsize="small")
    for a, label in zip(axes, ("face size sqrt(w*h) (px)", "face width / height (px)")):
        a.set_xscale("log")
        a.set_xlabel(label)
        a.set_ylabel("faces")
        if size.size:
            _log_ticks(a, *a.get_xlim())
    med = stats["face_size"].get("median")
    axes[0].set_title("face size" + (f" (median {med:.0f} px)" if med is not None else ""))
    axes[1].set_title("face width and height")
    fig.tight_layout()
    written.append(_save(fig, out / "face_size.png"))

    # aspect ratio h / w with tails
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ar = stats["aspect_ratio"]
    if size.size:
        aspect = h / w
        lo = min(float(aspect.min()), ASPECT_LOW / 2)
        hi = max(float(aspect.max()), ASPECT_HIGH * 2)
        ax.hist(aspect, bins=np.geomspace(lo, hi, 50), color="tab:blue")
        ax.axvspan(lo, ASPECT_LOW, color="tab:red", alpha=0.15)
        ax.axvspan(ASPECT_HIGH, hi, color="tab:red", alpha=0.15)
        ax.set_xlim(lo, hi)
    for x in (ASPECT_LOW, ASPECT_HIGH):
        ax.axvline(x, color="tab:red", ls="--", lw=1)
    ax.set_xscale("log")
    ticks = [t for t in (0.125, 0.25, 0.5, 1, 2, 4, 8) if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("face aspect ratio h / w (log scale)")
    ax.set_ylabel("faces")
    low_key, high_key = f"frac_below_{ASPECT_LOW:g}", f"frac_above_{ASPECT_HIGH:g}"
    ax.set_title(f"h/w < {ASPECT_LOW:g}: {100 * ar[low_key]:.1f}%   h/w > {ASPECT_HIGH:g}: "
                 f"{100 * ar[high_key]:.1f}%   (tails {100 * ar['frac_tails']:.1f}%)")
    fig.tight_layout()
    written.append(_save(fig, out / "aspect_ratio.png"))

    if "relative_face_size" in stats:
        rel = np.concatenate([
            np.sqrt((r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1]) / float(r.width * r.height))
            for r in recs if r.width and r.height and len(r)
        ])
        rel = rel[np.isfinite(rel) & (rel > 0)]
        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
        ax.hist(rel, bins=40, color="tab:blue")
        ax.set_xlabel("relative face size sqrt(w*h / (W*H))")
        ax.set_ylabel("faces")
        ax.set_title(f"relative face size (median {stats['relative_face_size']['median']:.3f})")
        fig.tight_layout()
        written.append(_save(fig, out / "relative_face_size.png"))
    logger.info("wrote %d plots to %s", len(written), out)
    return written
