"""Name faces with a gallery: crops -> embeddings -> the gallery's fitted model -> name or unknown.

One implementation for ``acfd identify`` and ``POST /v1/identify``. The gallery is fitted to its
own references (:meth:`~acfd.recognition.gallery.Gallery.fit`: a prototype per character and an
unknown threshold calibrated on the references), so a face's candidates are distinct characters,
each scored by its cosine to that character's prototype, best first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from acfd.recognition.crops import crop_face
from acfd.recognition.gallery import Gallery


@dataclass
class FaceIdentity:
    """One face's answer: ``identity`` is ``None`` when the best score is below the threshold."""

    identity: str | None
    best_match: str
    similarity: float
    candidates: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity, "best_match": self.best_match, "similarity": round(self.similarity, 4),
            "candidates": [{"name": n, "similarity": round(s, 4)} for n, s in self.candidates],
        }


class Identifier:
    """Names faces with an embedder and a gallery of the same embedder.

    Args:
        embedder: has ``embed(crops) -> (N, D)``, ``model_id``, ``embedding_dim``, ``input_size``,
            ``enlarge_rate`` and ``unknown_threshold`` (:class:`~acfd.recognition.Recognizer`, or
            :class:`~acfd.recognition.PixelEmbedder`).
        gallery: a :class:`~acfd.recognition.gallery.Gallery` built with that embedder.
        threshold: the unknown threshold; ``None`` for the gallery's calibrated one (the
            embedder's own when the gallery has one reference per character).

    Raises:
        GalleryError: the gallery is empty or was built with another model.
    """

    def __init__(self, embedder: Any, gallery: Gallery, threshold: float | None = None) -> None:
        gallery.check_model(embedder.model_id, embedder.embedding_dim)
        self.embedder = embedder
        self.gallery = gallery
        self.model = gallery.fit(fallback_threshold=float(embedder.unknown_threshold))
        self.threshold = self.model.threshold if threshold is None else float(threshold)

    def identify_crops(self, crops: Sequence[np.ndarray], k: int = 1) -> list[FaceIdentity]:
        """The answer for each face crop, with its ``k`` best distinct characters."""
        if len(crops) == 0:
            return []
        scores = self.model.scores(self.embedder.embed(crops))
        names = [str(c) for c in self.model.classes]
        out = []
        for row in scores:
            order = np.argsort(-row, kind="stable")[: max(1, k)]
            cands = [(names[i], float(row[i])) for i in order]
            best, sim = cands[0]
            out.append(FaceIdentity(best if sim >= self.threshold else None, best, sim, cands))
        return out

    def __call__(self, image: np.ndarray, boxes: Sequence[Sequence[float]], k: int = 1) -> list[dict[str, Any]]:
        """For each box of ``image``: ``{"identity", "best_match", "similarity", "candidates"}``."""
        crops = [
            crop_face(image, box, enlarge_rate=self.embedder.enlarge_rate, size=self.embedder.input_size)
            for box in boxes
        ]
        return [f.to_dict() for f in self.identify_crops(crops, k)]
