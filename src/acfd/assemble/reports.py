"""What the assembling stages share: the embedder they use, the report each returns, progress
bars, and the embedding index helpers (Faiss inner product over unit rows)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from acfd.assemble.config import DEFAULT_SIMILARITIES, AssembleConfig
from acfd.assemble.db import from_blob
from acfd.assemble.project import Project
from acfd.recognition.adaptation import ShowAdaptation
from acfd.recognition.faiss_index import faiss
from acfd.recognition.gallery_model import adapted


class Embedder(Protocol):
    """What the pipeline needs from a face embedder (``acfd.recognition.Recognizer``)."""

    embedding_dim: int
    model_id: str

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray: ...


@dataclass
class StageReport:
    """Totals of one stage over the whole project, and what this run did.

    Args:
        stage: the stage's name.
        unit: what is counted (``"sources"``, ``"frames"``, ``"faces"``...).
        n_in: items that reached the stage.
        kept: items that went on.
        dropped: ``{reason: count}`` of items that stopped here.
        done_now: items processed by this run (0 when everything was done before).
        seconds: wall-clock seconds of this run.
        note: an extra line (e.g. the number of clusters).
    """

    stage: str
    unit: str
    n_in: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    done_now: int = 0
    seconds: float = 0.0
    note: str = ""

    def line(self) -> str:
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items()) if n) or "none"
        extra = f"; {self.note}" if self.note else ""
        return (
            f"{self.stage:<10} in {self.n_in} {self.unit}, kept {self.kept}, dropped {sum(self.dropped.values())} "
            f"({why}){extra}  [{self.done_now} new, {self.seconds:.1f} s]"
        )


def progress_bar(total: int, desc: str, unit: str, progress: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None if progress else True, leave=False)


def record_report(project: Project, report: StageReport, started: str) -> StageReport:
    with project.db.transaction() as c:
        c.execute(
            "INSERT INTO stage_runs (stage, started_at, seconds, n_in, kept, dropped, skipped)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (report.stage, started, report.seconds, report.n_in, report.kept, json.dumps(report.dropped),
             report.done_now),
        )
    return report


def count_rows(project: Project, sql: str, params: tuple = ()) -> Counter:
    return Counter({row[0]: row[1] for row in project.db.query(sql, params)})


def check_embedder_model(project: Project, key: str, embedder: Embedder) -> None:
    stored = project.db.get_meta(key)
    if stored is None:
        project.db.set_meta(key, embedder.model_id)
    elif stored != embedder.model_id:
        raise ValueError(
            f"{project.root}: the project's embeddings come from model {stored}, not {embedder.model_id} "
            "(embeddings of two models are not comparable; use the same model or a new project)"
        )


def embedding_matrix(rows: Sequence[Any], column: str = "embedding") -> np.ndarray:
    if not rows:
        return np.zeros((0, 0), np.float32)
    return np.ascontiguousarray(np.stack([from_blob(r[column]) for r in rows]), dtype=np.float32)


def similarity_setting(cfg: AssembleConfig, name: str) -> float:
    """A similarity threshold of ``cfg``, the default one when unset (``cfg.for_embedder`` sets the model's)."""
    value = getattr(cfg, name)
    return float(DEFAULT_SIMILARITIES[name] if value is None else value)


def ip_index(vectors: np.ndarray, dim: int) -> faiss.IndexFlatIP:
    index = faiss.IndexFlatIP(dim)
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


class Leaders:
    """Leaders (representatives, cluster leaders) in a Faiss inner-product index, with their ids."""

    def __init__(self, rows: Sequence[Any], ids: list[int], adaptation: ShowAdaptation | None = None) -> None:
        vectors = embedding_matrix(rows) if adaptation is None or not rows else adapted(embedding_matrix(rows), adaptation)
        self.index = ip_index(vectors, vectors.shape[1]) if len(rows) else None
        self.ids = ids

    def match(self, v: np.ndarray, threshold: float, exclude: Iterable[int] = ()) -> int | None:
        """The id of the most similar leader above ``threshold`` that is not in ``exclude``."""
        if self.index is None:
            self.index = faiss.IndexFlatIP(v.shape[1])
        if not self.index.ntotal:
            return None
        excluded = set(exclude)
        sims, idx = self.index.search(v, min(self.index.ntotal, 1 + len(excluded)))
        for s, i in zip(sims[0], idx[0]):
            if s <= threshold:
                return None
            if i >= 0 and self.ids[int(i)] not in excluded:
                return self.ids[int(i)]
        return None

    def add(self, v: np.ndarray, leader_id: int) -> None:
        self.index.add(v)
        self.ids.append(leader_id)
