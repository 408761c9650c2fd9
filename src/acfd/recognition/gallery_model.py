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
- **adaptation to the show** (optional ``adaptation``): every embedding of one show shares a large
  common component (the show's drawing style, palette, line weight), so all its faces look alike
  to a model trained elsewhere. A transform fitted on the show's unlabelled face crops
  (:mod:`acfd.recognition.adaptation`: centring, then within-cluster covariance normalisation) is
  applied to references and faces before comparing, which spreads its characters apart again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from acfd.recognition.adaptation import ShowAdaptation
from acfd.recognition.calibration import calibrate_threshold, l2_normalize, leave_one_out_scores

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
    adaptation: ShowAdaptation | None = None

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Cosine of each row to each class, ``(N, C)``."""
        x = adapted(embeddings, self.adaptation)
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


def adapted(embeddings: np.ndarray, adaptation: ShowAdaptation | None) -> np.ndarray:
    """Unit rows of ``embeddings``, in the show's adapted space when an ``adaptation`` is given."""
    return l2_normalize(embeddings) if adaptation is None else adaptation.apply(embeddings)


def prototypes_of(embeddings: np.ndarray, labels: np.ndarray, augmented: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Classes (sorted) and the unit mean of their rows (and augmented views ``(N, A, D)``)."""
    classes = np.unique(labels)
    rows = l2_normalize(embeddings)
    if augmented is not None and augmented.size:
        rows = (rows + l2_normalize(augmented).sum(axis=1)) / (1 + augmented.shape[1])
    protos = np.stack([rows[labels == c].mean(axis=0) for c in classes])
    return classes, l2_normalize(protos)


def fit_gallery_model(
    embeddings: np.ndarray, labels: np.ndarray, augmented: np.ndarray | None = None,
    fallback_threshold: float = 0.5, min_insider_recall: float = 0.9, method: str = "prototype",
    adaptation: ShowAdaptation | None = None,
) -> GalleryModel:
    """Prototypes and a calibrated unknown threshold from the references of a gallery.

    Args:
        embeddings: ``(N, D)`` reference embeddings.
        labels: ``(N,)`` their classes (any sortable values: ints or names).
        augmented: optional ``(N, A, D)`` embeddings of augmented views of each reference.
        fallback_threshold: used when calibration is impossible (one reference per class, one
            class) and the adaptation, if any, brings no threshold of its own.
        method: ``prototype`` (the default) or ``nearest`` (each reference alone, the baseline).
        adaptation: the show's adaptation, applied to references and faces (see the module docstring).
    """
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("a gallery model needs at least one reference")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    refs = adapted(embeddings, adaptation)
    if augmented is not None and adaptation is not None:
        augmented = adaptation.apply(augmented.reshape(-1, augmented.shape[-1])).reshape(augmented.shape[0], augmented.shape[1], -1)
    classes, protos = prototypes_of(refs, labels, augmented)
    if adaptation is not None and adaptation.threshold is not None:
        fallback_threshold = adaptation.threshold
    within, between = leave_one_out_scores(refs, labels)
    threshold, calibrated = calibrate_threshold(within, between, fallback_threshold, min_insider_recall)
    if method == "nearest":
        return GalleryModel(protos, classes, threshold, calibrated, method, refs, np.searchsorted(classes, labels), adaptation)
    return GalleryModel(protos, classes, threshold, calibrated, adaptation=adaptation)
