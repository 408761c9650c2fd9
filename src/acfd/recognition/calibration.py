"""The "unknown" threshold: the cosine that best separates insiders from outsiders, from labelled rows alone.

Leave-one-out on labelled rows (a gallery's references): a row scored against its own class's
prototype without it is an insider; scored against the other classes' prototypes it is exactly an
outsider of a set that lacks its class. The threshold is the one that best separates those two
sets of scores (:func:`calibrate_threshold`, also given other insider/outsider scores by
:mod:`acfd.recognition.adaptation`), with insiders counted twice (a wrong "unknown" costs a person
one name to type, a wrong name costs a correction), clipped to keep at least ``min_insider_recall``
of the insiders.
"""

from __future__ import annotations

import numpy as np

#: Insiders counted this many times over outsiders when the threshold is chosen.
INSIDER_WEIGHT = 2.0


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` (its last axis) scaled to unit length (all-zero rows stay zero), as float32.
    NumPy only, so the gallery and threshold code runs without torch."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def leave_one_out_scores(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insider and outsider scores of labelled rows (see the module docstring).

    Returns:
        ``within``: each row's cosine to its class prototype built without it (classes with at
        least 2 rows); ``between``: each row's best cosine to another class's prototype.
    """
    rows = l2_normalize(embeddings)
    classes = np.unique(labels)
    sums = np.stack([rows[labels == c].sum(axis=0) for c in classes])
    counts = np.array([(labels == c).sum() for c in classes])
    protos = l2_normalize(sums)
    own = np.searchsorted(classes, labels)
    has_peers = counts[own] >= 2
    rest = sums[own][has_peers] - rows[has_peers]  # each row's class sum without it
    within = (rest * rows[has_peers]).sum(axis=1) / np.maximum(np.linalg.norm(rest, axis=1), 1e-12)
    sims = rows @ protos.T
    sims[np.arange(len(rows)), own] = -np.inf
    between = sims.max(axis=1) if len(classes) > 1 else np.zeros(0, np.float32)
    return np.asarray(within, np.float32), np.asarray(between, np.float32)


def calibrate_threshold(within: np.ndarray, between: np.ndarray, fallback: float, min_insider_recall: float = 0.9) -> tuple[float, bool]:
    """The cut between insider and outsider scores (see the module docstring); ``(fallback, False)``
    when either set is empty."""
    if len(within) == 0 or len(between) == 0:
        return float(fallback), False
    candidates = np.unique(np.concatenate([within, between]))
    cuts = np.concatenate([candidates - 1e-6, [candidates[-1] + 1e-6]])
    tpr = (within[None, :] >= cuts[:, None]).mean(axis=1)
    tnr = (between[None, :] < cuts[:, None]).mean(axis=1)
    utility = INSIDER_WEIGHT * tpr + tnr
    best = float(cuts[int(np.argmax(utility))])
    cap = float(np.quantile(within, 1.0 - min_insider_recall))
    return min(best, cap), True
