"""An on-disk gallery of known faces: a Faiss inner-product index + the names beside it.

Embeddings are L2-normalised, so the inner product is the cosine similarity (the papers search
their galleries with Faiss the same way, arXiv "Detection and remove duplication"). One file holds
everything (the serialised ``IndexFlatIP``, the names, the model id and the embedding size), written
atomically, so a gallery is never left half-saved. A gallery refuses embeddings of another model.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from acfd.recognition.adaptation import ShowAdaptation, fit_show_adaptation
from acfd.recognition.faiss_index import faiss
from acfd.recognition.gallery_model import GalleryModel, fit_gallery_model
from acfd.utils import atomic_path

FORMAT_VERSION = 1


class GalleryError(ValueError):
    """A gallery cannot be read, written or used as asked; the message is one line."""


class Gallery:
    """Names and face embeddings of one model, searchable by cosine similarity.

    Use :meth:`create` or :meth:`load`, then :meth:`add` / :meth:`search` / :meth:`save`.

    Args:
        path: the gallery file.
        dim: embedding size.
        model_id: the embedder's ``model_id``; embeddings of another model are refused.
    """

    def __init__(self, path: str | os.PathLike[str], dim: int, model_id: str) -> None:
        if int(dim) < 1:
            raise GalleryError(f"{path}: embedding size must be >= 1, got {dim}")
        self.path = Path(path)
        self.dim = int(dim)
        self.model_id = str(model_id)
        self.index = faiss.IndexFlatIP(self.dim)
        self.names: list[str] = []
        #: the show's adaptation (``acfd gallery adapt``), applied before comparing; or None
        self.adaptation: ShowAdaptation | None = None

    # -- creation / persistence ----------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], dim: int, model_id: str, overwrite: bool = False) -> Gallery:
        """A new empty gallery (written by :meth:`save`); refuses to replace an existing file unless asked."""
        if Path(path).exists() and not overwrite:
            raise GalleryError(f"{path}: a gallery already exists there (load it to add to it, or overwrite)")
        return cls(path, dim, model_id)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Gallery:
        """Read a gallery written by :meth:`save`."""
        p = Path(path)
        if not p.is_file():
            raise GalleryError(f"{p}: gallery file not found")
        try:
            with zipfile.ZipFile(p) as zf:
                meta = json.loads(zf.read("gallery.json"))
                raw = np.frombuffer(zf.read("index.faiss"), dtype=np.uint8)
                names = zf.namelist()
                if "adaptation.npz" in names:
                    with np.load(io.BytesIO(zf.read("adaptation.npz"))) as arrays:
                        adaptation: ShowAdaptation | None = ShowAdaptation.from_arrays(arrays)
                elif "centre.npy" in names:  # galleries adapted by centring alone
                    adaptation = ShowAdaptation(np.load(io.BytesIO(zf.read("centre.npy"))).astype(np.float32))
                else:
                    adaptation = None
            index = faiss.deserialize_index(raw)
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, RuntimeError, OSError, ValueError) as exc:
            raise GalleryError(f"{p}: not a readable acfd gallery ({type(exc).__name__}: {exc})") from exc
        if not isinstance(meta, dict) or {"dim", "model_id", "names"} - set(meta):
            raise GalleryError(f"{p}: gallery metadata lacks dim, model_id or names")
        gallery = cls(p, meta["dim"], meta["model_id"])
        if index.d != gallery.dim or index.ntotal != len(meta["names"]):
            raise GalleryError(
                f"{p}: inconsistent gallery (index has {index.ntotal} x {index.d}, metadata {len(meta['names'])} names x {gallery.dim})"
            )
        gallery.index, gallery.names = index, [str(n) for n in meta["names"]]
        if adaptation is not None:
            if adaptation.centre.shape != (gallery.dim,):
                raise GalleryError(f"{p}: inconsistent gallery (show centre of shape {adaptation.centre.shape}, embeddings {gallery.dim}-d)")
            gallery.adaptation = adaptation
        return gallery

    def save(self) -> Path:
        """Write the gallery to its path atomically (temp file + rename)."""
        meta = {"format": FORMAT_VERSION, "dim": self.dim, "model_id": self.model_id, "names": self.names}
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr("gallery.json", json.dumps(meta))
            zf.writestr("index.faiss", faiss.serialize_index(self.index).tobytes())
            if self.adaptation is not None:
                arrays = io.BytesIO()
                np.savez(arrays, **self.adaptation.arrays())
                zf.writestr("adaptation.npz", arrays.getvalue())
        with atomic_path(self.path) as tmp:
            tmp.write_bytes(buf.getvalue())
        return self.path

    # -- content ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.names)

    @property
    def identities(self) -> list[str]:
        """The distinct names, sorted."""
        return sorted(set(self.names))

    def check_model(self, model_id: str | None, dim: int | None = None) -> None:
        """Raise :class:`GalleryError` unless embeddings of ``model_id`` / size ``dim`` fit this gallery."""
        if dim is not None and int(dim) != self.dim:
            raise GalleryError(
                f"{self.path}: gallery holds {self.dim}-d embeddings of {self.model_id}, got {dim}-d ones"
                + (f" of {model_id}" if model_id else "")
            )
        if model_id is not None and model_id != self.model_id:
            raise GalleryError(
                f"{self.path}: gallery was built with model {self.model_id}, not {model_id} (embeddings are not comparable)"
            )

    def _as_matrix(self, embeddings: np.ndarray, model_id: str | None) -> np.ndarray:
        x = np.asarray(embeddings)
        if x.ndim != 2:
            raise GalleryError(f"{self.path}: embeddings must be an (N, D) array, got shape {x.shape}")
        self.check_model(model_id, x.shape[1])
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise GalleryError(f"{self.path}: embeddings contain NaN or infinite values")
        return x

    def add(self, names: Sequence[str], embeddings: np.ndarray, model_id: str | None = None) -> None:
        """Append one name per embedding row (existing entries are kept)."""
        if isinstance(names, str):
            raise GalleryError(f"{self.path}: names must be a sequence of strings, one per embedding, not one string")
        x = self._as_matrix(embeddings, model_id)
        if len(names) != x.shape[0]:
            raise GalleryError(f"{self.path}: {len(names)} names for {x.shape[0]} embeddings")
        if any(not isinstance(n, str) or not n for n in names):
            raise GalleryError(f"{self.path}: every name must be a non-empty string")
        self.index.add(x)
        self.names.extend(names)

    def remove(self, name: str) -> int:
        """Drop every entry of ``name``; returns how many were removed."""
        keep = [i for i, n in enumerate(self.names) if n != name]
        removed = len(self.names) - len(keep)
        if removed:
            vectors = self.vectors()[keep]
            self.index = faiss.IndexFlatIP(self.dim)
            if len(keep):
                self.index.add(np.ascontiguousarray(vectors))
            self.names = [self.names[i] for i in keep]
        return removed

    def vectors(self) -> np.ndarray:
        """Every stored embedding, ``(len(self), dim)``, in entry order."""
        if len(self) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.index.reconstruct_n(0, self.index.ntotal)

    def fit(self, fallback_threshold: float = 0.5) -> GalleryModel:
        """The gallery model of the stored references: one prototype per name and the unknown
        threshold calibrated on the references themselves (:mod:`acfd.recognition.gallery_model`).

        Raises:
            GalleryError: the gallery is empty.
        """
        if len(self) == 0:
            raise GalleryError(f"{self.path}: the gallery is empty (add faces with `acfd gallery add`)")
        return fit_gallery_model(self.vectors(), np.asarray(self.names), fallback_threshold=fallback_threshold, adaptation=self.adaptation)

    def adapt(self, embeddings: np.ndarray, model_id: str | None = None) -> None:
        """Adapt to a show: fit :mod:`~acfd.recognition.adaptation` on embeddings of its face crops
        (any faces of the show, named or not), applied to references and faces before comparing."""
        x = self._as_matrix(embeddings, model_id)
        if len(x) < 2:
            raise GalleryError(f"{self.path}: adapting to a show needs at least 2 face crops, got {len(x)}")
        self.adaptation = fit_show_adaptation(x)

    def search(self, embeddings: np.ndarray, k: int = 1, model_id: str | None = None) -> list[list[tuple[str, float]]]:
        """The ``k`` most similar entries of each query row: ``[[(name, cosine), ...], ...]``, best first."""
        x = self._as_matrix(embeddings, model_id)
        if len(self) == 0:
            raise GalleryError(f"{self.path}: the gallery is empty (add faces with `acfd gallery add`)")
        if k < 1:
            raise GalleryError(f"k must be >= 1, got {k}")
        if x.shape[0] == 0:
            return []
        scores, ids = self.index.search(x, min(k, len(self)))
        return [
            [(self.names[i], float(s)) for s, i in zip(row_s, row_i) if i >= 0]
            for row_s, row_i in zip(scores, ids)
        ]
