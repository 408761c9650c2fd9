"""A gallery model fitted to the user's own characters: class prototypes and a calibrated "unknown".

Plain nearest neighbour over a gallery treats every reference alone and leaves "unknown" to one
global threshold chosen on other characters. Fitting to the gallery does better with the same
references:

- **prototypes**: each character is the normalised mean of its references' embeddings (and of
  their augmented views when given: flips and shifts of the reference crops), which averages out
  pose and framing; a probe's score for a character is its cosine to the prototype (the
  prototypical-network rule, Snell et al. 2017).
- **calibrated threshold**: leave-one-out on the references themselves. A reference scored against
  its own character's prototype without it is an insider; scored against the other characters'
  prototypes it is exactly an outsider of a gallery that lacks its character. The threshold is the
  one that best separates those two sets of scores, with insiders counted twice (a wrong "unknown"
  costs a person one name to type, a wrong name costs a correction), clipped to keep at least
  ``min_insider_recall`` of the insiders. With one reference per character there is nothing to
  leave out and the embedder's own threshold is used.
- **adaptation to the show** (optional ``centre``): every embedding of one show shares a large
  common component (the show's drawing style, palette, line weight), so all its faces look alike
  to a model trained elsewhere. Removing the mean embedding of the show's face crops before
  comparing (feature centring, the simplest unsupervised domain adaptation) spreads its characters
  apart again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Insiders counted this many times over outsiders when the threshold is chosen.
INSIDER_WEIGHT = 2.0


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


#: How a gallery scores a face against a character: its prototype, or its most similar reference.
METHODS = ("prototype", "nearest")


@dataclass
class GalleryModel:
    """Prototypes ``(C, D)`` of the classes ``classes`` and the unknown ``threshold`` (cosine).

    With ``method="nearest"`` (plain nearest neighbour, the baseline) ``references`` and
    ``reference_class`` hold every reference and a class scores its most similar one.
    """

    prototypes: np.ndarray
    classes: np.ndarray
    threshold: float
    calibrated: bool = False
    method: str = "prototype"
    references: np.ndarray | None = None
    reference_class: np.ndarray | None = None
    centre: np.ndarray | None = None

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Cosine of each row to each class, ``(N, C)``."""
        x = centred(embeddings, self.centre)
        if self.method == "prototype" or self.references is None or self.reference_class is None:
            return x @ self.prototypes.T
        sims = x @ self.references.T
        return np.stack([sims[:, self.reference_class == c].max(axis=1) for c in range(len(self.classes))], axis=1)

    def predict(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best class and its score per row (the caller applies ``threshold`` for "unknown")."""
        s = self.scores(embeddings)
        if s.shape[0] == 0:
            return np.zeros(0, dtype=self.classes.dtype), np.zeros(0, np.float32)
        best = s.argmax(axis=1)
        return self.classes[best], s[np.arange(len(s)), best]


def centred(embeddings: np.ndarray, centre: np.ndarray | None) -> np.ndarray:
    """Unit rows of ``embeddings`` with ``centre`` (a show's mean embedding) removed first, if given."""
    x = np.asarray(embeddings, dtype=np.float32)
    return _unit(x if centre is None else x - np.asarray(centre, dtype=np.float32))


def prototypes_of(embeddings: np.ndarray, labels: np.ndarray, augmented: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Classes (sorted) and the unit mean of their rows (and augmented views ``(N, A, D)``)."""
    classes = np.unique(labels)
    rows = _unit(embeddings)
    if augmented is not None and augmented.size:
        rows = (rows + _unit(augmented).sum(axis=1)) / (1 + augmented.shape[1])
    protos = np.stack([rows[labels == c].mean(axis=0) for c in classes])
    return classes, _unit(protos)


def leave_one_out_scores(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insider and outsider scores of the references (see the module docstring).

    Returns:
        ``within``: each reference's cosine to its class prototype built without it (classes with
        at least 2 references); ``between``: each reference's best cosine to another class's prototype.
    """
    rows = _unit(embeddings)
    classes = np.unique(labels)
    sums = np.stack([rows[labels == c].sum(axis=0) for c in classes])
    counts = np.array([(labels == c).sum() for c in classes])
    protos = _unit(sums)
    own = np.searchsorted(classes, labels)
    within = []
    for i, c in enumerate(own):
        if counts[c] >= 2:
            within.append(float(_unit(sums[c] - rows[i]) @ rows[i]))
    sims = rows @ protos.T
    sims[np.arange(len(rows)), own] = -np.inf
    between = sims.max(axis=1) if len(classes) > 1 else np.zeros(0, np.float32)
    return np.asarray(within, np.float32), np.asarray(between, np.float32)


def calibrate_threshold(within: np.ndarray, between: np.ndarray, fallback: float, min_insider_recall: float = 0.9) -> tuple[float, bool]:
    """The cut between insider and outsider scores (module docstring); ``(fallback, False)`` when
    either set is empty."""
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


def fit_gallery_model(
    embeddings: np.ndarray, labels: np.ndarray, augmented: np.ndarray | None = None,
    fallback_threshold: float = 0.5, min_insider_recall: float = 0.9, method: str = "prototype",
    centre: np.ndarray | None = None,
) -> GalleryModel:
    """Prototypes and a calibrated unknown threshold from the references of a gallery.

    Args:
        embeddings: ``(N, D)`` reference embeddings.
        labels: ``(N,)`` their classes (any sortable values: ints or names).
        augmented: optional ``(N, A, D)`` embeddings of augmented views of each reference.
        fallback_threshold: used when calibration is impossible (one reference per class, one class).
        method: ``prototype`` (the default) or ``nearest`` (each reference alone, the baseline).
        centre: the show's mean embedding, removed from references and faces (see the module docstring).
    """
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("a gallery model needs at least one reference")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    refs = centred(embeddings, centre)
    if augmented is not None and centre is not None:
        augmented = centred(augmented, centre)
    classes, protos = prototypes_of(refs, labels, augmented)
    within, between = leave_one_out_scores(refs, labels)
    threshold, calibrated = calibrate_threshold(within, between, fallback_threshold, min_insider_recall)
    if method == "nearest":
        return GalleryModel(protos, classes, threshold, calibrated, method, refs, np.searchsorted(classes, labels), centre)
    return GalleryModel(protos, classes, threshold, calibrated, centre=centre)
