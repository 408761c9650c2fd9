"""The recognition benchmark: few-shot closed-set naming, open-set rejection, and the papers' protocols.

A user names the characters of a show from a handful of reference crops each, so the questions
that matter are:

- **few-shot closed set**: with ``k`` references per character in the gallery (k = 1, 5, 10,
  seeded draws, several episodes), the accuracy of naming every other crop of those characters;
- **open set**: with one character left out of the gallery in turn, the share of its crops
  called "unknown" (a) at the threshold that keeps 95 % of the insiders named, and (b) at the
  gallery's own calibrated threshold (:mod:`acfd.recognition.gallery_model`), beside the share of
  insiders named correctly there;
- the arXiv paper's identification with distractors and 10-fold verification
  (:mod:`acfd.recognition.protocols`).

Every figure is computed from unit embeddings, so any embedder (a trained network, the raw-pixel
baselines, a colour histogram) goes through the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from acfd.recognition.gallery_model import GalleryModel, fit_gallery_model

#: The closed-set gallery sizes the benchmark reports (references per character).
DEFAULT_SHOTS = (1, 5, 10)

#: Share of insiders kept named when the open-set rejection is read off at a fixed operating point.
INSIDER_KEEP = 0.95


@dataclass
class FewShotResult:
    """Closed-set accuracy with ``k`` references per character (mean and std over episodes)."""

    k: int
    accuracy: float
    std: float
    episodes: int
    probes: int


@dataclass
class OpenSetResult:
    """Leave-one-character-out rejection with ``k`` references per gallery character."""

    k: int
    #: share of outsiders called unknown at the threshold that keeps 95 % of insiders named
    rejected_at_95: float
    #: at the gallery's calibrated threshold: insiders named correctly, outsiders called unknown
    insiders_correct: float
    outsiders_unknown: float
    episodes: int


@dataclass
class BenchmarkReport:
    """Every figure of one embedder on one identity set."""

    name: str
    few_shot: list[FewShotResult] = field(default_factory=list)
    open_set: list[OpenSetResult] = field(default_factory=list)
    rank1: float | None = None
    auc: float | None = None
    verification_accuracy: float | None = None

    def row(self) -> dict[str, float | str | None]:
        """One table row: ``acc@k``, ``reject@95``, ``named``/``unknown`` at the calibrated threshold, protocols."""
        out: dict[str, float | str | None] = {"features": self.name}
        for r in self.few_shot:
            out[f"acc@{r.k}"] = r.accuracy
        for r in self.open_set:
            out[f"reject95@{r.k}"] = r.rejected_at_95
            out[f"named@{r.k}"] = r.insiders_correct
            out[f"unknown@{r.k}"] = r.outsiders_unknown
        out["rank1"], out["auc"], out["verif"] = self.rank1, self.auc, self.verification_accuracy
        return out


def draw_references(labels: np.ndarray, k: int, rng: np.random.Generator, classes: Sequence[int] | None = None) -> np.ndarray:
    """Indices of ``k`` seeded references of every class in ``classes`` (all classes by default);
    a class with ``k`` images or fewer keeps one image out as a probe."""
    classes = np.unique(labels) if classes is None else classes
    picks = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        picks.append(rng.choice(members, min(k, len(members) - 1), replace=False))
    return np.concatenate(picks).astype(np.int64)


FitFn = Callable[[np.ndarray, np.ndarray, np.ndarray | None], GalleryModel]


def _default_fit(ref_emb: np.ndarray, ref_labels: np.ndarray, ref_aug: np.ndarray | None) -> GalleryModel:
    return fit_gallery_model(ref_emb, ref_labels, augmented=ref_aug)


def few_shot(
    embeddings: np.ndarray, labels: np.ndarray, k: int, episodes: int = 10, seed: int = 0,
    fit: FitFn = _default_fit, augmented: np.ndarray | None = None,
) -> FewShotResult:
    """Closed-set accuracy: ``k`` references per class fit a gallery model, the rest are named.

    Args:
        embeddings: ``(N, D)`` unit rows.
        labels: ``(N,)`` class indices.
        augmented: optional ``(N, A, D)`` embeddings of augmented views of each crop, passed to the
            gallery model for the references only.
    """
    rng = np.random.default_rng(seed)
    accs, probes = [], 0
    for _ in range(episodes):
        refs = draw_references(labels, k, rng)
        is_probe = np.ones(len(labels), bool)
        is_probe[refs] = False
        model = fit(embeddings[refs], labels[refs], None if augmented is None else augmented[refs])
        pred, _ = model.predict(embeddings[is_probe])
        accs.append(float((pred == labels[is_probe]).mean()))
        probes = int(is_probe.sum())
    return FewShotResult(k, float(np.mean(accs)), float(np.std(accs)), episodes, probes)


def open_set(
    embeddings: np.ndarray, labels: np.ndarray, k: int, episodes: int = 10, seed: int = 0,
    fit: FitFn = _default_fit, augmented: np.ndarray | None = None, distractors: np.ndarray | None = None,
) -> OpenSetResult:
    """Leave-one-class-out open set (see the module docstring); needs at least 3 classes.

    Each episode leaves every class out once; ``distractors`` (faces of nobody in the set) join the
    outsiders of every round.
    """
    classes = np.unique(labels)
    if len(classes) < 3:
        raise ValueError("the open-set benchmark needs at least 3 identities (2 in the gallery, 1 outside)")
    rng = np.random.default_rng(seed)
    rejected, named, unknown = [], [], []
    for _ in range(episodes):
        for out in classes:
            inside = classes[classes != out]
            refs = draw_references(labels, k, rng, inside)
            is_insider = np.isin(labels, inside)
            is_insider[refs] = False
            model = fit(embeddings[refs], labels[refs], None if augmented is None else augmented[refs])
            outsiders = embeddings[labels == out]
            if distractors is not None and len(distractors):
                outsiders = np.concatenate([outsiders, distractors])
            pred_in, score_in = model.predict(embeddings[is_insider])
            _, score_out = model.predict(outsiders)
            t95 = float(np.quantile(score_in, 1.0 - INSIDER_KEEP))
            rejected.append(float((score_out < t95).mean()))
            t = model.threshold
            named.append(float(((pred_in == labels[is_insider]) & (score_in >= t)).mean()))
            unknown.append(float((score_out < t).mean()))
    return OpenSetResult(k, float(np.mean(rejected)), float(np.mean(named)), float(np.mean(unknown)), episodes)


def run_benchmark(
    name: str, embeddings: np.ndarray, labels: np.ndarray, shots: Sequence[int] = DEFAULT_SHOTS,
    episodes: int = 10, seed: int = 0, fit: FitFn = _default_fit, augmented: np.ndarray | None = None,
    distractors: np.ndarray | None = None, protocols: bool = True,
) -> BenchmarkReport:
    """Few-shot and open-set figures for every ``k`` in ``shots``, plus the papers' protocols."""
    from acfd.recognition.protocols import identification, verification

    report = BenchmarkReport(name)
    counts = np.bincount(labels)[np.unique(labels)]
    for k in shots:
        if k >= counts.min():
            continue
        report.few_shot.append(few_shot(embeddings, labels, k, episodes, seed, fit, augmented))
        if len(counts) >= 3:
            report.open_set.append(open_set(embeddings, labels, k, max(1, episodes // 2), seed, fit, augmented))
    if protocols:
        report.rank1 = identification(embeddings, labels, distractors, seed=seed).rank1
        ver = verification(embeddings, labels, seed=seed)
        report.auc, report.verification_accuracy = ver.auc, ver.accuracy
    return report


def baseline_features(crops: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The baselines every learned model is shown beside, as unit rows of ``crops``:

    - ``pixels``: ``acfd recognize eval --features pixels`` (32x32 RGB, each crop's mean removed);
    - ``pixels-mean-removed``: 64x64 grey, the mean crop of the evaluated set removed (a
      transductive baseline: it sees every crop it is evaluated on);
    - ``colour-histogram``: :func:`~acfd.recognition.embedder.colour_histogram` alone.
    """
    import cv2

    from acfd.recognition.embedder import PixelEmbedder, colour_histogram, l2_normalize

    grey = np.stack([
        cv2.resize(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), (64, 64), interpolation=cv2.INTER_AREA) for c in crops
    ]).reshape(len(crops), -1).astype(np.float32)
    return {
        "pixels": PixelEmbedder().embed(crops),
        "pixels-mean-removed": l2_normalize(grey - grey.mean(axis=0)),
        "colour-histogram": colour_histogram(crops),
    }


def format_table(reports: Sequence[BenchmarkReport]) -> str:
    """A Markdown table of the reports' rows (percentages, AUC as 0..1)."""
    rows = [r.row() for r in reports]
    columns = list(dict.fromkeys(c for row in rows for c in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c)
            if isinstance(v, float):
                cells.append(f"{v:.3f}" if c == "auc" else f"{100 * v:.1f}")
            else:
                cells.append("" if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
