"""Faiss, imported quietly.

faiss's loader logs at INFO level every CPU build it tries and fails to load (AVX512-SPR, AVX512,
AVX2, with a ``ModuleNotFoundError`` each) before the one that loads; under the CLI's INFO logging
those lines would come before every gallery, identify, recognize and assemble output. Import faiss
through this module to keep them out.
"""

from __future__ import annotations

import logging

logging.getLogger("faiss.loader").setLevel(logging.WARNING)

import faiss  # noqa: E402

__all__ = ["faiss"]
