"""``POST /v1/identify``: name the detected faces by searching a recognition gallery.

Each face is cropped as the recognition papers do (enlarged by the embedder's rate,
:func:`acfd.recognition.crop_face`), embedded, and looked up in the :class:`~acfd.recognition.Gallery`
(cosine similarity); a best match below the embedder's ``unknown_threshold`` is reported as unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from acfd.serve.settings import ServeSettings


class Identifier:
    """Names faces with an embedder and a gallery.

    Args:
        embedder: has ``embed(crops) -> (N, D)``, ``model_id``, ``input_size``, ``enlarge_rate``
            and ``unknown_threshold`` (:class:`acfd.recognition.Recognizer`, or ``PixelEmbedder``).
        gallery: an :class:`acfd.recognition.Gallery` made with the same embedder.
    """

    def __init__(self, embedder: Any, gallery: Any) -> None:
        gallery.check_model(embedder.model_id, embedder.embedding_dim)
        self.embedder = embedder
        self.gallery = gallery

    def __call__(self, image: np.ndarray, boxes: Sequence[Sequence[float]], k: int = 1) -> list[dict[str, Any]]:
        """For each box: ``{"identity": name or None, "similarity": s, "candidates": [...]}``."""
        from acfd.recognition import crop_face

        if len(boxes) == 0:
            return []
        crops = [
            crop_face(image, box, enlarge_rate=self.embedder.enlarge_rate, size=self.embedder.input_size)
            for box in boxes
        ]
        matches = self.gallery.search(self.embedder.embed(crops), k=k, model_id=self.embedder.model_id)
        out = []
        for row in matches:
            best_name, best = row[0] if row else (None, 0.0)
            known = best >= self.embedder.unknown_threshold
            out.append(
                {
                    "identity": best_name if known else None,
                    "similarity": round(float(best), 4),
                    "candidates": [{"name": n, "similarity": round(float(s), 4)} for n, s in row],
                }
            )
        return out


def default_identifier_factory(settings: ServeSettings) -> Identifier | None:
    """The shipped (or ``recognizer_weights``) recognition model and ``settings.gallery``; ``None``
    when no gallery is configured."""
    if settings.gallery is None:
        return None
    from acfd.recognition import Gallery, Recognizer

    return Identifier(Recognizer(settings.recognizer_weights, device=settings.device), Gallery.load(settings.gallery))
