"""Cartoon face recognition (the iCartoonFace recognition task): crops with the enlarged rate,
embedding networks and margin heads, training with dataset fusion / domain adaptation, the
identification and verification protocols, and a Faiss gallery.

Public API: :func:`crop_face`, :class:`Recognizer`, :class:`PixelEmbedder`, :class:`Gallery`,
:class:`Identifier` (name faces with a gallery fitted to its references).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["crop_face", "Recognizer", "PixelEmbedder", "Gallery", "GalleryError", "Identifier"]

if TYPE_CHECKING:  # pragma: no cover
    from acfd.recognition.crops import crop_face
    from acfd.recognition.embedder import PixelEmbedder, Recognizer
    from acfd.recognition.gallery import Gallery, GalleryError
    from acfd.recognition.identify import Identifier

_HOMES = {
    "crop_face": "acfd.recognition.crops",
    "Recognizer": "acfd.recognition.embedder",
    "PixelEmbedder": "acfd.recognition.embedder",
    "Gallery": "acfd.recognition.gallery",
    "GalleryError": "acfd.recognition.gallery",
    "Identifier": "acfd.recognition.identify",
}


def __getattr__(name: str) -> Any:
    # Lazy imports keep `import acfd.recognition` light (torch/timm/faiss load on first use).
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'acfd.recognition' has no attribute {name!r}")
