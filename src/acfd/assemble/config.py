"""Settings of the semi-automatic assembling pipeline, as data.

Defaults are the iCartoonFace papers' values (arXiv recognition paper, section "Dataset",
"Detection and remove duplication" and "Obtaining candidate images"; MM'20 section 3.1):

- videos: one frame per second ("extract one frame per second from the episodes");
- crops: the face spans 50% of the crop's height and width, i.e. the recognition issue's enlarged
  rate ``r = 1.0`` (the crop is ``1 + r`` times the face);
- crops whose resolution is below 100 pixels, or whose sharpness (variance of the Laplacian on the
  crop resized to 256x256) is below 30, are thrown away;
- near-duplicates: cosine similarity above 0.95 (Faiss);

The three similarity thresholds (near-duplicates, candidates, clusters) are properties of the
recognition model's similarity scale, not of the show: left unset (``None``), they come from the
recognition weights, which store the values chosen for them on characters they were not trained on
(:meth:`AssembleConfig.for_embedder`), else from the papers' values below.
- candidate identity: the papers take the best reference when its similarity is above 0.6, a
  value that belongs to their model; here a character is a candidate when the crop's similarity to
  its prototype (references and confirmed crops) is above a threshold calibrated on the project's
  own references (``candidate_sim = None``, :mod:`acfd.recognition.gallery_model`), or above a
  ``candidate_sim`` that is set.

``cluster_sim`` (grouping the crops that no reference claims, so that a person names a whole group
at once) is this project's addition: the papers do not cluster, they only start from references.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from typing import Any


#: The settings a recognition model's weights may carry (:meth:`AssembleConfig.for_embedder`).
SIMILARITY_SETTINGS = ("dup_sim", "candidate_sim", "cluster_sim")

#: Unset thresholds of a model that stores none: the papers' 0.95 for near-duplicates, candidates
#: calibrated on the references (``None``), and 0.5 for clusters.
DEFAULT_SIMILARITIES: dict[str, float | None] = {"dup_sim": 0.95, "candidate_sim": None, "cluster_sim": 0.5}


@dataclass(frozen=True)
class AssembleConfig:
    """Thresholds of every stage (see the module docstring for where each default comes from).

    Args:
        every_seconds: sample a video frame every this many seconds (``None``: use ``every_frames``).
        every_frames: sample every this many video frames (used when ``every_seconds`` is ``None``).
        score_thr: keep detections scoring above this.
        enlarge_rate: crop ``(1 + r)`` times the face's width and height, centred on it.
        min_resolution: drop crops whose shorter side (in source pixels) is below this.
        blur_size: the side the crop is resized to before measuring sharpness.
        blur_thr: drop crops whose variance of the Laplacian is below this.
        crop_size: side of the saved crop images (JPEG, shown in the app and exported).
        dup_sim: two crops with cosine similarity above this are near-duplicates (``None``: the
            recognition model's, else 0.95).
        candidate_sim: a character is a candidate when the similarity to its prototype is above
            this (``None``: the recognition model's, else calibrated on the references).
        cluster_sim: a crop joins a cluster when its similarity to the cluster's leader is above
            this (``None``: the recognition model's, else 0.5).
        adapt: compare crops (candidates, clusters) in the show's adapted space, fitted on the
            project's crops (:mod:`acfd.recognition.adaptation`).
        tracks: a video face whose box overlaps a face of the previous sampled frame continues its
            track and is a duplicate of it (one character; :func:`acfd.assemble.stages.dedup`).
    """

    every_seconds: float | None = 1.0
    every_frames: int = 1
    score_thr: float = 0.5
    enlarge_rate: float = 1.0
    min_resolution: int = 100
    blur_size: int = 256
    blur_thr: float = 30.0
    crop_size: int = 256
    dup_sim: float | None = None
    candidate_sim: float | None = None
    cluster_sim: float | None = None
    adapt: bool = True
    tracks: bool = True

    def __post_init__(self) -> None:
        if self.every_seconds is not None and not self.every_seconds > 0:
            raise ValueError(f"every_seconds must be > 0, got {self.every_seconds}")
        if self.every_frames < 1:
            raise ValueError(f"every_frames must be >= 1, got {self.every_frames}")
        for name in ("score_thr", "dup_sim", "candidate_sim", "cluster_sim"):
            v = getattr(self, name)
            if v is not None and not -1.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [-1, 1], got {v}")
        if self.enlarge_rate < 0:
            raise ValueError(f"enlarge_rate must be >= 0, got {self.enlarge_rate}")
        if self.min_resolution < 0 or self.blur_thr < 0:
            raise ValueError("min_resolution and blur_thr must be >= 0")
        if self.blur_size < 8 or self.crop_size < 8:
            raise ValueError("blur_size and crop_size must be >= 8 pixels")

    def for_embedder(self, embedder: object) -> AssembleConfig:
        """These settings with every unset similarity threshold taken from the embedder's
        ``assemble_settings`` (what its weights store), else from :data:`DEFAULT_SIMILARITIES`."""
        stored = dict(getattr(embedder, "assemble_settings", None) or {})
        values = {}
        for name in SIMILARITY_SETTINGS:
            if getattr(self, name) is None:
                values[name] = stored.get(name, DEFAULT_SIMILARITIES[name])
        return dataclasses.replace(self, **values)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AssembleConfig:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def merged(self, overrides: dict[str, Any]) -> AssembleConfig:
        """A copy with ``overrides`` (name -> value) applied."""
        return dataclasses.replace(self, **overrides)

    def differences(self, other: AssembleConfig) -> list[str]:
        """``name: mine -> other`` for every setting that differs."""
        return [
            f"{f.name}: {getattr(self, f.name)} -> {getattr(other, f.name)}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]
