"""The semi-automatic dataset assembling pipeline (iCartoonFace papers: arXiv "Dataset" and its
Fig. 3, MM'20 section 3.1): sources -> detection -> enlarged crops (small and blurred dropped) ->
embeddings -> near-duplicate removal -> candidate identities from a reference set, or clusters ->
human true/false review (``acfd annotate``) -> export.

Modules: ``config`` (settings as data), ``db`` (the project's SQLite state), ``project`` (folder
layout), ``stages`` (one function per stage), ``pipeline`` (runs them), ``review`` (answers,
questions, groups, undo, progress), ``export`` (the dataset), ``simulate`` (how many answers a
labelled set needs).
"""

from __future__ import annotations

from acfd.assemble.config import AssembleConfig
from acfd.assemble.project import Project

__all__ = ["AssembleConfig", "Project"]
