"""Adaptation to a show: a transform of face embeddings fitted on the show's own unlabelled crops.

A recognizer trained on other characters sees every face of one show through that show's drawing
style, and spends most of its feature space on what the show's faces share or on what varies
within one character (pose, expression, framing). Two unsupervised steps, fitted on embeddings of
the show's face crops (named or not), undo much of that:

1. **centring**: the show's mean embedding is removed (every face of the show shares a large
   common component: palette, line weight). The simplest unsupervised domain adaptation.
2. **within-cluster covariance normalisation**: the centred crops are clustered (spherical
   k-means, several cluster counts and seeds: each clustering is noisy, their average is not) and
   the space is whitened by the average scatter of crops around their own cluster's mean, shrunk
   towards the identity. Directions in which crops of one cluster (mostly one character) differ are
   shrunk, the others kept. This is WCCN (Hatch et al., ICSLP 2006; a standard back end of speaker
   verification) with k-means clusters standing in for the speaker labels a show does not have.

``apply`` maps embeddings to unit rows in the adapted space; cosine similarity there compares two
faces of the show. Cosines there run lower than in the embedder's own space, so the adaptation
carries its own "unknown" threshold for galleries that cannot calibrate one (one reference per
character): :mod:`~acfd.recognition.calibration`'s rule applied to the show's crops, clustered
once more in the adapted space, each cluster standing for a character with one crop as its
reference. With fewer than :data:`MIN_PER_CLUSTER` crops per cluster of the smallest clustering
only the centring is fitted: a covariance of a handful of crops is mostly those crops.

The cluster counts, restarts and shrinkage were chosen on validation characters and sit on a
plateau (docs/experiments/recognition.md): other values move accuracy by under a point and AUC by
under 0.01.

Hand-written because it is a dozen lines of NumPy around Faiss's k-means; scikit-learn is not a
dependency of recognition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from acfd.recognition.calibration import calibrate_threshold, l2_normalize

#: Cluster counts whose within-cluster scatters are averaged.
CLUSTER_COUNTS = (8, 16, 32)
#: k-means restarts (seeds) per cluster count.
RESTARTS = 5
#: Weight of the identity in the shrunk scatter (0: plain whitening, 1: no whitening).
SHRINKAGE = 0.5
#: Crops per cluster a clustering needs to be used (fewer crops: that cluster count is skipped).
MIN_PER_CLUSTER = 10
#: Crops the clustering is fitted on at most (a seeded sample of a larger show).
MAX_FIT_CROPS = 20_000


@dataclass
class ShowAdaptation:
    """``apply(x) = unit(unit(x - centre) @ projection - offset)``; without a projection,
    ``unit(x - centre)``. ``threshold``: the unknown threshold in the adapted space, or None."""

    centre: np.ndarray
    projection: np.ndarray | None = None
    offset: np.ndarray | None = None
    threshold: float | None = None

    @property
    def dim(self) -> int:
        return int(self.centre.shape[0])

    def apply(self, embeddings: np.ndarray) -> np.ndarray:
        """Unit rows of ``embeddings`` ``(N, D)`` in the show's adapted space."""
        x = l2_normalize(np.asarray(embeddings, dtype=np.float32) - self.centre)
        if self.projection is None:
            return x
        y = x @ self.projection
        return l2_normalize(y if self.offset is None else y - self.offset)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays that define it (for ``np.savez``); :meth:`from_arrays` reads them back."""
        out = {"centre": self.centre.astype(np.float32)}
        if self.projection is not None:
            out["projection"] = self.projection.astype(np.float32)
            out["offset"] = (np.zeros(self.dim, np.float32) if self.offset is None else self.offset).astype(np.float32)
        if self.threshold is not None:
            out["threshold"] = np.asarray(self.threshold, np.float32)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray] | np.lib.npyio.NpzFile) -> ShowAdaptation:
        """The inverse of :meth:`arrays`; raises ``ValueError`` when the shapes disagree."""
        centre = np.asarray(arrays["centre"], np.float32)
        if centre.ndim != 1:
            raise ValueError(f"show centre must be a vector, got shape {centre.shape}")
        projection = np.asarray(arrays["projection"], np.float32) if "projection" in arrays else None
        offset = np.asarray(arrays["offset"], np.float32) if "offset" in arrays else None
        d = centre.shape[0]
        if projection is not None and projection.shape[0] != d:
            raise ValueError(f"show projection of shape {projection.shape} does not fit {d}-d embeddings")
        if projection is not None and offset is not None and offset.shape != (projection.shape[1],):
            raise ValueError(f"show offset of shape {offset.shape} does not fit a projection of shape {projection.shape}")
        threshold = float(arrays["threshold"]) if "threshold" in arrays else None
        return cls(centre, projection, offset, threshold)


def cluster(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Spherical k-means cluster of every row of ``x`` (unit rows), ``(N,)``."""
    from acfd.recognition.faiss_index import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    km = faiss.Kmeans(x.shape[1], k, niter=25, seed=seed, spherical=True, min_points_per_centroid=1)
    km.train(x)
    return km.index.search(x, 1)[1][:, 0]


def usable_cluster_counts(n: int, counts: Sequence[int] = CLUSTER_COUNTS) -> list[int]:
    """The cluster counts with at least :data:`MIN_PER_CLUSTER` of ``n`` rows per cluster."""
    return [k for k in counts if n >= MIN_PER_CLUSTER * k]


def within_cluster_scatter(x: np.ndarray, counts: Sequence[int], restarts: int, seed: int) -> np.ndarray | None:
    """The average over spherical k-means clusterings of ``x`` (unit rows) of the scatter of rows
    around their cluster's mean, ``(D, D)``; None when no cluster count has enough rows."""
    usable = usable_cluster_counts(len(x), counts)
    if not usable:
        return None
    scatter = np.zeros((x.shape[1], x.shape[1]), np.float64)
    runs = 0
    for k in usable:
        for r in range(restarts):
            assign = cluster(x, k, seed + r)
            for c in np.unique(assign):
                members = x[assign == c]
                residual = members - members.mean(axis=0)
                scatter += residual.T @ residual
            runs += 1
    return scatter / (len(x) * runs)


def fit_show_adaptation(
    embeddings: np.ndarray,
    cluster_counts: Sequence[int] = CLUSTER_COUNTS,
    restarts: int = RESTARTS,
    shrinkage: float = SHRINKAGE,
    seed: int = 0,
) -> ShowAdaptation:
    """Fit the adaptation (module docstring) on embeddings ``(N, D)`` of one show's face crops.

    Raises:
        ValueError: fewer than 2 embeddings, or ``shrinkage`` outside ``(0, 1]``.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"adapting to a show needs at least 2 face embeddings, got shape {x.shape}")
    if not 0.0 < shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in (0, 1], got {shrinkage}")
    centre = x.mean(axis=0)
    rows = l2_normalize(x - centre)
    sample = rows
    if len(rows) > MAX_FIT_CROPS:
        sample = rows[np.random.default_rng(seed).choice(len(rows), MAX_FIT_CROPS, replace=False)]
    scatter = within_cluster_scatter(sample, cluster_counts, restarts, seed)
    if scatter is None or shrinkage == 1.0:
        return ShowAdaptation(centre)
    d = scatter.shape[0]
    shrunk = (1.0 - shrinkage) * scatter + shrinkage * (np.trace(scatter) / d) * np.eye(d)
    values, vectors = np.linalg.eigh(shrunk)
    projection = (vectors / np.sqrt(np.maximum(values, 1e-12))).astype(np.float32)
    offset = (sample @ projection).mean(axis=0).astype(np.float32)
    adaptation = ShowAdaptation(centre, projection, offset)
    adapted = l2_normalize(sample @ projection - offset)  # the sample in the adapted space
    groups = cluster(adapted, usable_cluster_counts(len(sample), cluster_counts)[0], seed)
    threshold, calibrated = calibrate_threshold(*single_reference_scores(adapted, groups, seed), fallback=float("nan"))
    adaptation.threshold = threshold if calibrated else None
    return adaptation


def single_reference_scores(x: np.ndarray, groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Insider and outsider scores of a gallery with one reference per group, drawn from ``x``
    (unit rows) by seeded draws: each row's cosine to another row of its own group, and its best
    cosine to one row of each other group (the score of a face whose character is not in the gallery)."""
    rng = np.random.default_rng(seed)
    names = np.unique(groups)
    members = [np.flatnonzero(groups == g) for g in names]
    own = np.searchsorted(names, groups)
    within, between = [], []
    for i in range(len(x)):
        peers = members[own[i]][members[own[i]] != i]
        if len(peers):
            within.append(float(x[rng.choice(peers)] @ x[i]))
        others = [rng.choice(m) for j, m in enumerate(members) if j != own[i]]
        if others:
            between.append(float((x[others] @ x[i]).max()))
    return np.asarray(within, np.float32), np.asarray(between, np.float32)
