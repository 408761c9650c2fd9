"""``POST /v1/identify``: name the detected faces with the recognition library's
:class:`~acfd.recognition.identify.Identifier` (a gallery fitted to its references: distinct
candidate characters, a calibrated unknown threshold)."""

from __future__ import annotations

from acfd.recognition.identify import Identifier
from acfd.serve.settings import ServeSettings

__all__ = ["Identifier", "default_identifier_factory"]


def default_identifier_factory(settings: ServeSettings) -> Identifier | None:
    """The shipped (or ``recognizer_weights``) recognition model and ``settings.gallery``; ``None``
    when no gallery is configured."""
    if settings.gallery is None:
        return None
    from acfd.recognition import Gallery, Recognizer

    return Identifier(Recognizer(settings.recognizer_weights, device=settings.device), Gallery.load(settings.gallery))
