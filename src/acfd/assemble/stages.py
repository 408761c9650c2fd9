"""The stages of the semi-automatic assembling pipeline (arXiv recognition paper section "Dataset"
and its Fig. 3; MM'20 section 3.1), each a small resumable step over the project database.

``ingest`` (sources -> frames) -> ``detect`` (frames -> faces) -> ``crop`` (enlarged crops; drop
small and blurred) -> ``embed`` -> ``dedup`` (near-duplicates above 0.95, Faiss) -> ``references``
(reference set -> embeddings) -> ``candidates`` (best reference above 0.6) -> ``cluster`` (group
what the references leave, for naming a group at once).

Every stage picks only the work its earlier runs have not finished, commits each unit of work in
one transaction with its "done" flag, shows a tqdm bar and returns a :class:`StageReport` with the
project's totals (in, kept, dropped and why) and what this run did.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torchvision.ops import box_iou
from tqdm.auto import tqdm

from acfd.assemble.config import DEFAULT_SIMILARITIES, AssembleConfig
from acfd.assemble.db import from_blob, now_iso, to_blob
from acfd.assemble.project import Project, thumbnail, write_jpeg
from acfd.assemble.quality import crop_resolution, laplacian_variance, quality_verdict
from acfd.data.image_io import ImageReadError, is_image_file, load_image, read_image_size
from acfd.recognition.crops import crop_face
from acfd.recognition.faiss_index import faiss
from acfd.recognition.gallery_model import centred, fit_gallery_model
from acfd.utils import FileReadError

logger = logging.getLogger(__name__)

#: ``finder(frames RGB, frame keys) -> [(boxes (N, 4) x1y1x2y2, scores (N,)), ...]``.
FaceFinder = Callable[[Sequence[np.ndarray], Sequence[str]], list[tuple[np.ndarray, np.ndarray]]]


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


def _bar(total: int, desc: str, unit: str, progress: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None if progress else True, leave=False)


def _record(project: Project, report: StageReport, started: str) -> StageReport:
    with project.db.transaction() as c:
        c.execute(
            "INSERT INTO stage_runs (stage, started_at, seconds, n_in, kept, dropped, skipped)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (report.stage, started, report.seconds, report.n_in, report.kept, json.dumps(report.dropped),
             report.done_now),
        )
    return report


def _counts(project: Project, sql: str, params: tuple = ()) -> Counter:
    return Counter({row[0]: row[1] for row in project.db.query(sql, params)})


# ------------------------------------------------------------------------------------------------
# 1. sources -> frames


def _video_step(path: Path, cfg: AssembleConfig) -> int:
    """Frames between two samples: ``every_seconds`` x fps (at least 1), else ``every_frames``."""
    from acfd.data.video import read_video_info

    if cfg.every_seconds is None:
        return cfg.every_frames
    fps = read_video_info(path).fps
    if fps <= 0:
        logger.warning("%s: no frame rate in the header; sampling every %d frames", path, cfg.every_frames)
        return cfg.every_frames
    return max(1, round(fps * cfg.every_seconds))


def ingest(project: Project, sources: Iterable[str], cfg: AssembleConfig, progress: bool = True) -> StageReport:
    """Register image files and sampled video frames (timestamps kept) as frames.

    Image files are read where they are (their header gives the size); video frames are saved as
    JPEGs under ``frames/``. A source is done in one transaction, so a killed run redoes at most
    the video it was sampling.

    Args:
        project: the project.
        sources: files, folders (recursive) and globs of images and videos.
        cfg: the settings (video sampling).
        progress: show a progress bar.
    """
    from acfd.predict.sources import collect_inputs  # the one expansion of files/folders/globs
    from acfd.data.video import iter_video_frames

    t0, started = time.perf_counter(), now_iso()
    db = project.db
    items, failures = collect_inputs(list(sources))
    with db.transaction() as c:
        for path, reason in failures:
            c.execute(
                "INSERT OR IGNORE INTO sources (path, key, kind, status, error) VALUES (?, ?, 'unknown', 'failed', ?)",
                (str(Path(path).absolute()), str(path), reason),
            )
        for it in items:
            c.execute(
                "INSERT OR IGNORE INTO sources (path, key, kind) VALUES (?, ?, ?)",
                (str(it.path.resolve()), it.key, it.kind),
            )
    todo = db.query("SELECT id, path, key, kind FROM sources WHERE status = 'pending' ORDER BY id")
    done_now = 0
    with _bar(len(todo), "ingest", "src", progress) as bar:
        for src in todo:
            path = Path(src["path"])
            try:
                if src["kind"] == "image":
                    w, h = read_image_size(path)
                    rows = [(None, None, str(path), src["key"], w, h)]
                else:
                    rows = []
                    step = _video_step(path, cfg)
                    for index, ts, frame in iter_video_frames(path, every=step):
                        rows.append((index, ts, frame))
                    rows = _save_video_frames(project, src, rows)
            except FileReadError as exc:
                with db.transaction() as c:
                    c.execute("UPDATE sources SET status = 'failed', error = ? WHERE id = ?", (exc.reason, src["id"]))
                bar.update(1)
                continue
            with db.transaction() as c:
                for frame_index, ts, file, key, w, h in rows:
                    c.execute(
                        "INSERT OR IGNORE INTO frames (source_id, frame_index, timestamp, file, key, width, height)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (src["id"], frame_index, ts, file, key, w, h),
                    )
                c.execute("UPDATE sources SET status = 'done' WHERE id = ?", (src["id"],))
            done_now += 1
            bar.update(1)
    status = _counts(project, "SELECT status, COUNT(*) FROM sources GROUP BY status")
    n_frames = int(db.scalar("SELECT COUNT(*) FROM frames") or 0)
    report = StageReport(
        "ingest", "sources", n_in=sum(status.values()), kept=status["done"],
        dropped={"unreadable": status["failed"]} if status["failed"] else {},
        done_now=done_now, seconds=time.perf_counter() - t0, note=f"{n_frames} frames",
    )
    return _record(project, report, started)


def _save_video_frames(project: Project, src: Any, frames: list[tuple[int, float, np.ndarray]]) -> list[tuple]:
    """Save sampled frames as ``frames/<source>_<index>.jpg``; rows for the frames table."""
    rows = []
    for index, ts, frame in frames:
        rel = Path("frames") / f"s{int(src['id'])}_f{int(index):07d}.jpg"
        write_jpeg(project.root / rel, frame)
        key = f"{src['key']}#frame={int(index):06d}"
        rows.append((int(index), float(ts), rel.as_posix(), key, frame.shape[1], frame.shape[0]))
    return rows


# ------------------------------------------------------------------------------------------------
# 2. frames -> faces


def detector_finder(detector: Any) -> FaceFinder:
    """A :data:`FaceFinder` over an ``acfd.Detector`` (its ``detect_arrays``)."""

    def find(frames: Sequence[np.ndarray], keys: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(d.boxes, d.scores) for d in detector.detect_arrays(list(frames), list(keys))]

    return find


def boxes_finder(csv_path: str | Path) -> FaceFinder:
    """A :data:`FaceFinder` that reads boxes from an iCartoonFace CSV instead of detecting.

    Rows are matched to frames by the frame key (the file's path relative to its source folder, or
    its name); scores are 1 (or the CSV's scores for a submission file).

    Raises:
        AnnotationError: the CSV cannot be read.
    """
    from acfd.data.formats import read_icartoon_csv

    records, problems = read_icartoon_csv(csv_path)
    for p in problems:
        if p.severity == "error":
            logger.warning("%s", p)
    by_name = {Path(k).name: r for k, r in records.items()}

    def find(frames: Sequence[np.ndarray], keys: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for key in keys:
            rec = records.get(key) or by_name.get(Path(key.split("#frame=")[0]).name)
            if rec is None:
                out.append((np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)))
            else:
                scores = rec.scores if rec.scores is not None else np.ones(len(rec), np.float32)
                out.append((rec.boxes, scores))
        return out

    return find


def detect(
    project: Project, finder: FaceFinder, cfg: AssembleConfig, batch_size: int = 4, progress: bool = True
) -> StageReport:
    """Find faces on every frame not yet done; keep those scoring above ``cfg.score_thr``.

    Args:
        project: the project.
        finder: the detector (see :func:`detector_finder`, :func:`boxes_finder`).
        cfg: the settings (score threshold).
        batch_size: frames per detector call (and per transaction).
        progress: show a progress bar.
    """
    t0, started = time.perf_counter(), now_iso()
    db = project.db
    todo = db.query("SELECT id, key FROM frames WHERE detected = 0 AND error IS NULL ORDER BY id")
    done_now = 0
    with _bar(len(todo), "detect", "frame", progress) as bar:
        for start in range(0, len(todo), batch_size):
            chunk, good, images, bad = todo[start : start + batch_size], [], [], []
            for row in chunk:
                try:
                    images.append(project.load_frame(row["id"]))
                    good.append(row)
                except ImageReadError as exc:
                    bad.append((row, exc.reason))
            found = finder(images, [row["key"] for row in good]) if good else []
            _store_detections(
                project, cfg, [(row["id"], reason) for row, reason in bad],
                [(row["id"], image.shape[:2], boxes, scores) for row, image, (boxes, scores) in zip(good, images, found)],
            )
            done_now += len(chunk)
            bar.update(len(chunk))
    return _detect_report(project, cfg, done_now, t0, started)


def _store_detections(
    project: Project,
    cfg: AssembleConfig,
    failed: Sequence[tuple[int, str]],
    found: Sequence[tuple[int, tuple[int, int], np.ndarray, np.ndarray]],
) -> None:
    """One transaction: mark ``failed`` frames (id, reason) and store the faces of ``found`` frames
    (id, (height, width), boxes, scores), clipped to the frame; each frame is then done."""
    with project.db.transaction() as c:
        for frame_id, reason in failed:
            c.execute("UPDATE frames SET error = ? WHERE id = ?", (reason, frame_id))
        for frame_id, (h, w), boxes, scores in found:
            for box, score in zip(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores).reshape(-1)):
                x1, y1 = max(0.0, box[0]), max(0.0, box[1])
                x2, y2 = min(float(w), box[2]), min(float(h), box[3])
                status = "new" if float(score) > cfg.score_thr else "low_score"
                if x2 <= x1 or y2 <= y1:
                    status = "empty_box"
                c.execute(
                    "INSERT INTO faces (frame_id, x1, y1, x2, y2, score, status) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (frame_id, x1, y1, max(x2, x1), max(y2, y1), float(score), status),
                )
            c.execute("UPDATE frames SET detected = 1 WHERE id = ?", (frame_id,))


@dataclass(frozen=True)
class RayDetection:
    """Run the detect stage on Ray Data (:func:`detect_on_ray`) instead of in this process.

    Args:
        detector_kwargs: :class:`acfd.predict.detector.Detector` arguments for every actor.
        address: an existing Ray cluster (``auto``, ``ray://host:10001``); ``None``: a local Ray.
        frames_per_run: frames per Ray job; each job's faces are committed before the next starts,
            so a killed run loses at most one job's work.
    """

    detector_kwargs: dict[str, Any]
    address: str | None = None
    frames_per_run: int = 512


def detect_on_ray(
    project: Project, ray_detection: RayDetection, cfg: AssembleConfig, batch_size: int = 4, progress: bool = True
) -> StageReport:
    """The detect stage on Ray Data actors (``acfd.predict.ray_engine``, as ``acfd detect --engine
    ray``): the same faces, statuses and errors as :func:`detect`, frames read by the actors."""
    from acfd.predict.ray_engine import ray_session, run_detection_ray
    from acfd.predict.sources import InputItem

    t0, started = time.perf_counter(), now_iso()
    todo = project.db.query("SELECT id, file FROM frames WHERE detected = 0 AND error IS NULL ORDER BY id")
    done_now = 0
    if todo:  # one Ray for all the jobs (run_detection_ray would start and stop one per job)
        with ray_session(ray_detection.address), _bar(len(todo), "detect (ray)", "frame", progress) as bar:
            for start in range(0, len(todo), ray_detection.frames_per_run):
                chunk = todo[start : start + ray_detection.frames_per_run]
                items = [InputItem(project.resolve(row["file"]), str(row["id"]), "image") for row in chunk]
                run = run_detection_ray(items, ray_detection.detector_kwargs, batch_size=batch_size, progress=False)
                by_id = {int(key): dets for key, dets in run.results}
                reasons = dict(run.failures)
                failed = [(row["id"], reasons.get(str(item.path), "no result from Ray"))
                          for row, item in zip(chunk, items) if row["id"] not in by_id]
                found = [(i, d.image_size, d.boxes, d.scores) for i, d in by_id.items()]
                _store_detections(project, cfg, failed, found)
                done_now += len(chunk)
                bar.update(len(chunk))
    return _detect_report(project, cfg, done_now, t0, started)


def _detect_report(project: Project, cfg: AssembleConfig, done_now: int, t0: float, started: str) -> StageReport:
    db = project.db
    n_frames = int(db.scalar("SELECT COUNT(*) FROM frames") or 0)
    errors = int(db.scalar("SELECT COUNT(*) FROM frames WHERE error IS NOT NULL") or 0)
    faces = _counts(project, "SELECT status, COUNT(*) FROM faces GROUP BY status")
    below = {k: faces[k] for k in ("low_score", "empty_box") if faces[k]}
    report = StageReport(
        "detect", "frames", n_in=n_frames, kept=n_frames - errors,
        dropped={"unreadable": errors} if errors else {}, done_now=done_now,
        seconds=time.perf_counter() - t0,
        note=f"{sum(faces.values()) - sum(below.values())} faces above score {cfg.score_thr}"
        + (f" ({', '.join(f'{n} {k}' for k, n in below.items())} not kept)" if below else ""),
    )
    return _record(project, report, started)


# ------------------------------------------------------------------------------------------------
# 3. faces -> crops (resolution and sharpness filters)


def crop(project: Project, cfg: AssembleConfig, progress: bool = True) -> StageReport:
    """Cut the enlarged crop of every new face; drop small and blurred ones, save the others.

    The crop is ``(1 + enlarge_rate)`` times the face (acfd.recognition.crops). A crop whose shorter
    side in source pixels is below ``min_resolution`` is ``small``; one whose variance of the
    Laplacian (on the crop resized to ``blur_size``) is below ``blur_thr`` is ``blurred``.
    """
    t0, started = time.perf_counter(), now_iso()
    db = project.db
    todo = db.query("SELECT id, frame_id, x1, y1, x2, y2 FROM faces WHERE status = 'new' ORDER BY frame_id, id")
    by_frame: dict[int, list[Any]] = {}
    for row in todo:
        by_frame.setdefault(row["frame_id"], []).append(row)
    with _bar(len(todo), "crop", "face", progress) as bar:
        for frame_id, rows in by_frame.items():
            try:
                image = project.load_frame(frame_id)
            except ImageReadError as exc:
                logger.warning("%s", exc)
                with db.transaction() as c:
                    c.executemany("UPDATE faces SET status = 'unreadable' WHERE id = ?", [(r["id"],) for r in rows])
                bar.update(len(rows))
                continue
            updates = []
            for r in rows:
                box = (r["x1"], r["y1"], r["x2"], r["y2"])
                resolution = crop_resolution(box, cfg.enlarge_rate)
                face_crop = crop_face(image, box, cfg.enlarge_rate, size=cfg.crop_size)
                sharp_input = face_crop if cfg.crop_size == cfg.blur_size else crop_face(
                    image, box, cfg.enlarge_rate, size=cfg.blur_size
                )
                sharpness = laplacian_variance(sharp_input, cfg.blur_size)
                verdict = quality_verdict(resolution, sharpness, cfg.min_resolution, cfg.blur_thr)
                if verdict == "kept":  # the file exists before the row says "kept"
                    write_jpeg(project.crop_file(r["id"]), face_crop)
                updates.append((verdict, resolution[0], resolution[1], sharpness, r["id"]))
            with db.transaction() as c:
                c.executemany(
                    "UPDATE faces SET status = ?, crop_w = ?, crop_h = ?, sharpness = ? WHERE id = ?", updates
                )
            bar.update(len(rows))
    faces = _counts(
        project, "SELECT status, COUNT(*) FROM faces WHERE status NOT IN ('new', 'low_score', 'empty_box') GROUP BY status"
    )
    report = StageReport(
        "crop", "faces", n_in=sum(faces.values()), kept=faces["kept"],
        dropped={k: n for k, n in faces.items() if k != "kept"}, done_now=len(todo),
        seconds=time.perf_counter() - t0,
    )
    return _record(project, report, started)


# ------------------------------------------------------------------------------------------------
# 4. crops -> embeddings


def _check_model(project: Project, key: str, embedder: Embedder) -> None:
    stored = project.db.get_meta(key)
    if stored is None:
        project.db.set_meta(key, embedder.model_id)
    elif stored != embedder.model_id:
        raise ValueError(
            f"{project.root}: the project's embeddings come from model {stored}, not {embedder.model_id} "
            "(embeddings of two models are not comparable; use the same model or a new project)"
        )


def embed(project: Project, embedder: Embedder, batch_size: int = 64, progress: bool = True) -> StageReport:
    """Embed every kept crop that has no embedding yet (L2-normalised rows, stored in the database).

    Raises:
        ValueError: the project's embeddings come from another model.
    """
    t0, started = time.perf_counter(), now_iso()
    db = project.db
    _check_model(project, "embedder_model_id", embedder)
    todo = [r["id"] for r in db.query("SELECT id FROM faces WHERE status = 'kept' AND embedding IS NULL ORDER BY id")]
    with _bar(len(todo), "embed", "crop", progress) as bar:
        for start in range(0, len(todo), batch_size):
            ids = todo[start : start + batch_size]
            crops = [load_image(project.crop_file(i)) for i in ids]
            vectors = np.asarray(embedder.embed(crops), dtype=np.float32)
            with db.transaction() as c:
                c.executemany("UPDATE faces SET embedding = ? WHERE id = ?", [(to_blob(v), i) for v, i in zip(vectors, ids)])
            bar.update(len(ids))
    n = int(db.scalar("SELECT COUNT(*) FROM faces WHERE status = 'kept'") or 0)
    report = StageReport("embed", "crops", n_in=n, kept=n, done_now=len(todo), seconds=time.perf_counter() - t0)
    return _record(project, report, started)


def _matrix(rows: Sequence[Any], column: str = "embedding") -> np.ndarray:
    if not rows:
        return np.zeros((0, 0), np.float32)
    return np.ascontiguousarray(np.stack([from_blob(r[column]) for r in rows]), dtype=np.float32)


def _similarity(cfg: AssembleConfig, name: str) -> float:
    """A similarity threshold of ``cfg``, the default one when unset (``cfg.for_embedder`` sets the model's)."""
    value = getattr(cfg, name)
    return float(DEFAULT_SIMILARITIES[name] if value is None else value)


def _index(vectors: np.ndarray, dim: int) -> faiss.IndexFlatIP:
    index = faiss.IndexFlatIP(dim)
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


class _Leaders:
    """Leaders (representatives, cluster leaders) in a Faiss inner-product index, with their ids."""

    def __init__(self, rows: Sequence[Any], ids: list[int], centre: np.ndarray | None = None) -> None:
        vectors = _matrix(rows) if centre is None or not rows else centred(_matrix(rows), centre)
        self.index = _index(vectors, vectors.shape[1]) if len(rows) else None
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


# ------------------------------------------------------------------------------------------------
# 5. near-duplicate removal


def dedup(project: Project, cfg: AssembleConfig, progress: bool = True, commit_every: int = 256) -> StageReport:
    """Mark near-duplicates: a crop whose cosine similarity to an earlier kept representative is
    above ``dup_sim`` becomes a duplicate of it (``faces.dup_of``), else a representative.

    Crops are visited in id order against a Faiss inner-product index of the representatives, so
    the result does not depend on how a run was split. Only representatives are asked about; a
    duplicate takes its representative's label at export.

    With ``cfg.tracks``, a face of a video frame whose box overlaps (IoU >= :data:`TRACK_IOU`) a
    face of the previous sampled frame of the same video, each the other's best overlap, continues
    that face's track: one character, so it becomes a duplicate of the track's representative
    (an episode's structure, given for free).
    """
    t0, started = time.perf_counter(), now_iso()
    db = project.db
    dup_sim = _similarity(cfg, "dup_sim")
    reps = db.query("SELECT id, embedding FROM faces WHERE dedup_done = 1 AND dup_of IS NULL AND embedding IS NOT NULL ORDER BY id")
    todo = db.query("SELECT id, embedding FROM faces WHERE dedup_done = 0 AND embedding IS NOT NULL ORDER BY id")
    leaders = _Leaders(reps, [r["id"] for r in reps])
    tracks = _Tracks(db) if cfg.tracks else None
    pending: list[tuple[int | None, int]] = []

    def flush() -> None:
        with db.transaction() as c:
            c.executemany("UPDATE faces SET dup_of = ?, dedup_done = 1 WHERE id = ?", pending)
        pending.clear()

    with _bar(len(todo), "dedup", "crop", progress) as bar:
        for row in todo:
            v = from_blob(row["embedding"]).reshape(1, -1)
            dup_of = tracks.previous(row["id"]) if tracks is not None else None
            if dup_of is None:
                dup_of = leaders.match(v, dup_sim)
            if dup_of is None:
                leaders.add(v, row["id"])
            if tracks is not None:
                tracks.representative[row["id"]] = dup_of if dup_of is not None else row["id"]
            pending.append((dup_of, row["id"]))
            if len(pending) >= commit_every:
                flush()
            bar.update(1)
        if pending:
            flush()
    n = int(db.scalar("SELECT COUNT(*) FROM faces WHERE dedup_done = 1") or 0)
    dups = int(db.scalar("SELECT COUNT(*) FROM faces WHERE dup_of IS NOT NULL") or 0)
    report = StageReport(
        "dedup", "crops", n_in=n, kept=n - dups,
        dropped={f"near-duplicate (cos > {dup_sim})" + (" or the same face track" if cfg.tracks else ""): dups},
        done_now=len(todo), seconds=time.perf_counter() - t0,
    )
    return _record(project, report, started)


#: Box overlap above which faces of consecutive sampled video frames continue one face track.
TRACK_IOU = 0.5


class _Tracks:
    """Face tracks across consecutive sampled frames of each video (see :func:`dedup`)."""

    def __init__(self, db: Any) -> None:
        rows = db.query(
            "SELECT f.id, f.frame_id, f.x1, f.y1, f.x2, f.y2, f.dup_of, f.dedup_done, fr.source_id, fr.frame_index"
            " FROM faces f JOIN frames fr ON fr.id = f.frame_id JOIN sources s ON s.id = fr.source_id"
            " WHERE s.kind = 'video' AND f.status = 'kept' AND f.embedding IS NOT NULL ORDER BY fr.source_id, fr.frame_index, f.id"
        )
        self.box = {r["id"]: (r["x1"], r["y1"], r["x2"], r["y2"]) for r in rows}
        self.frame_of = {r["id"]: r["frame_id"] for r in rows}
        self.faces_in: dict[int, list[int]] = {}
        frames_of_source: dict[int, list[int]] = {}
        for r in rows:
            self.faces_in.setdefault(r["frame_id"], []).append(r["id"])
            order = frames_of_source.setdefault(r["source_id"], [])
            if not order or order[-1] != r["frame_id"]:
                order.append(r["frame_id"])
        self.previous_frame = {b: a for order in frames_of_source.values() for a, b in zip(order, order[1:])}
        #: face -> the representative of its track so far (faces already deduplicated count too)
        self.representative = {r["id"]: r["dup_of"] or r["id"] for r in rows if r["dedup_done"]}

    def _best(self, face: int, others: list[int]) -> tuple[int | None, float]:
        if not others:
            return None, 0.0
        iou = box_iou(torch.tensor([self.box[face]]), torch.tensor([self.box[o] for o in others]))[0]
        j = int(iou.argmax())
        return others[j], float(iou[j])

    def previous(self, face: int) -> int | None:
        """The representative of the track ``face`` continues, or None."""
        frame = self.frame_of.get(face)
        before = self.previous_frame.get(frame) if frame is not None else None
        if before is None:
            return None
        match, iou = self._best(face, self.faces_in[before])
        if match is None or iou < TRACK_IOU or self._best(match, self.faces_in[frame])[0] != face:
            return None
        return self.representative.get(match, match)


# ------------------------------------------------------------------------------------------------
# 6. reference set


def _identity_id(c: Any, name: str, origin: str) -> int:
    c.execute("INSERT OR IGNORE INTO identities (name, origin, created_at) VALUES (?, ?, ?)", (name, origin, now_iso()))
    return int(c.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()[0])


def _pin_reference_source(project: Project, key: str, given: Path, option: str) -> None:
    """Record the project's reference folder / gallery on first use; refuse another one later (as
    changed settings are refused: candidates made from two reference sets would not be comparable)."""
    resolved, stored = str(given.resolve()), project.db.get_meta(key)
    if stored is None:
        project.db.set_meta(key, resolved)
    elif stored != resolved:
        raise ValueError(
            f"{project.root}: the project's references come from {stored}, not {resolved} ({option}); "
            "add images to that folder (new ones are loaded) or start a new project"
        )


def add_references(
    project: Project,
    embedder: Embedder,
    references: str | Path | None = None,
    gallery: str | Path | None = None,
    progress: bool = True,
) -> StageReport:
    """Load the reference set: "typical" images per character (the papers' reference images).

    ``references`` is a folder with one subfolder per character holding face crops (a few
    typical images each); ``gallery`` is a gallery file of the recognition issue (``acfd gallery
    add``), whose stored embeddings are used as they are. Images already loaded are skipped.

    Raises:
        ValueError: a references path that is not a folder, a references folder or gallery other
            than the one the project was started with (as changed settings are refused), a
            gallery of another model.
    """
    t0, started = time.perf_counter(), now_iso()
    db = project.db
    _check_model(project, "embedder_model_id", embedder)
    dropped: Counter = Counter()
    done_now = 0
    if references is not None:
        root = Path(references)
        if not root.is_dir():
            raise ValueError(f"{root}: --references must be a folder with one subfolder per character")
        _pin_reference_source(project, "references_root", root, "--references")
        files = [p for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")
                 for p in sorted(d.iterdir()) if p.is_file() and is_image_file(p)]
        known = {r["origin"] for r in db.query("SELECT origin FROM refs")}
        todo = [p for p in files if str(p.resolve()) not in known]
        with _bar(len(todo), "references", "img", progress) as bar:
            for p in todo:
                try:
                    image = load_image(p)
                except ImageReadError as exc:
                    logger.warning("%s", exc)
                    dropped["unreadable"] += 1
                    bar.update(1)
                    continue
                vector = np.asarray(embedder.embed([image]), np.float32)[0]
                with db.transaction() as c:
                    identity = _identity_id(c, p.parent.name, "references")
                    cur = c.execute(
                        "INSERT INTO refs (identity_id, file, origin, embedding) VALUES (?, NULL, ?, ?)",
                        (identity, str(p.resolve()), to_blob(vector)),
                    )
                    ref_id = int(cur.lastrowid)
                    write_jpeg(project.reference_file(ref_id), thumbnail(image, 256))
                    c.execute("UPDATE refs SET file = ? WHERE id = ?", (f"references/{ref_id}.jpg", ref_id))
                done_now += 1
                bar.update(1)
    if gallery is not None:
        from acfd.recognition.gallery import Gallery

        g = Gallery.load(gallery)
        g.check_model(embedder.model_id, embedder.embedding_dim)
        _pin_reference_source(project, "references_gallery", Path(gallery), "--gallery")
        vectors = g.index.reconstruct_n(0, g.index.ntotal) if len(g) else np.zeros((0, g.dim), np.float32)
        with db.transaction() as c:
            for i, (name, vector) in enumerate(zip(g.names, vectors)):
                origin = f"gallery:{Path(gallery).resolve()}#{i}"
                if c.execute("SELECT 1 FROM refs WHERE origin = ?", (origin,)).fetchone():
                    continue
                identity = _identity_id(c, name, "gallery")
                c.execute("INSERT INTO refs (identity_id, file, origin, embedding) VALUES (?, NULL, ?, ?)",
                          (identity, origin, to_blob(vector)))
                done_now += 1
    n_refs = int(db.scalar("SELECT COUNT(*) FROM refs") or 0)
    n_ids = int(db.scalar("SELECT COUNT(DISTINCT identity_id) FROM refs") or 0)
    report = StageReport(
        "references", "images", n_in=n_refs + sum(dropped.values()), kept=n_refs, dropped=dict(dropped),
        done_now=done_now, seconds=time.perf_counter() - t0, note=f"{n_ids} identities",
    )
    return _record(project, report, started)


# ------------------------------------------------------------------------------------------------
# 7. candidate identities


def candidates(project: Project, cfg: AssembleConfig, progress: bool = True) -> StageReport:
    """Give each open representative crop its candidate identities, best first.

    A character is a candidate when the crop's cosine to its prototype (the mean of its
    reference images and of the crops already confirmed as it: :mod:`acfd.recognition.gallery_model`)
    is above ``candidate_sim``, or, when that is ``None``, above the threshold calibrated on the
    references themselves. Run again (or :func:`refit_candidates`) after answers, the confirmed
    crops sharpen the prototypes and the open crops are re-ranked.
    """
    t0, started = time.perf_counter(), now_iso()
    db = project.db
    state = _candidates_state(db)
    n_open = 0
    if db.get_meta("candidates_state") != state:
        with _bar(1, "candidates", "refit", progress) as bar:
            _, n_open = refit_candidates(project, cfg)
            bar.update(1)
        db.set_meta("candidates_state", _candidates_state(db))
    threshold = _candidate_threshold(project)
    with_cand = int(db.scalar("SELECT COUNT(DISTINCT face_id) FROM candidates") or 0)
    shown = "calibrated" if cfg.candidate_sim is None else "set"
    report = StageReport(
        "candidates", "crops", n_in=n_open, kept=with_cand,
        dropped={f"no character above {threshold:.3f} ({shown}; left for clustering)": n_open - with_cand},
        done_now=n_open, seconds=time.perf_counter() - t0,
    )
    return _record(project, report, started)


#: Fewest kept crops whose mean embedding stands for the show (fewer: no adaptation).
MIN_CROPS_TO_ADAPT = 20


def project_centre(project: Project) -> np.ndarray | None:
    """The mean embedding of the project's kept crops (the show), or None with fewer than
    :data:`MIN_CROPS_TO_ADAPT` (the mean of a few crops is mostly those crops' own characters)."""
    rows = project.db.query("SELECT embedding FROM faces WHERE status = 'kept' AND embedding IS NOT NULL")
    return _matrix(rows).mean(axis=0) if len(rows) >= MIN_CROPS_TO_ADAPT else None


def _candidates_state(db: Any) -> str:
    """What the candidates depend on: the references, the answers (and undos), the representatives."""
    row = db.query(
        "SELECT (SELECT COUNT(*) FROM refs) AS r, (SELECT MAX(id) FROM refs) AS rm, (SELECT COUNT(*) FROM actions) AS a,"
        " (SELECT COUNT(undone_at) FROM actions) AS u,"
        " (SELECT COUNT(*) FROM faces WHERE dedup_done = 1 AND dup_of IS NULL AND embedding IS NOT NULL) AS f"
    )[0]
    return f"{row['r']}:{row['rm']}:{row['a']}:{row['u']}:{row['f']}"


def _candidate_threshold(project: Project) -> float:
    """The candidate threshold the last refit used (NaN before any)."""
    stored = project.db.get_meta("candidate_threshold")
    return float(stored) if stored is not None else float("nan")


def refit_candidates(project: Project, cfg: AssembleConfig) -> tuple[float, int]:
    """Re-rank every open representative against prototypes of the references and the confirmed
    crops (what the answers so far taught); answered crops keep their answers.

    Returns:
        The candidate threshold used, and the number of open crops re-ranked.
    """
    from acfd.assemble.review import face_states

    db = project.db
    states = face_states(db)
    rows = db.query(
        "SELECT id, embedding FROM faces WHERE dedup_done = 1 AND dup_of IS NULL AND embedding IS NOT NULL ORDER BY id"
    )
    embedding = {r["id"]: from_blob(r["embedding"]) for r in rows}
    centre = project_centre(project) if cfg.adapt else None
    refs = db.query("SELECT identity_id, embedding FROM refs ORDER BY id")
    confirmed = [(fid, st.label) for fid, st in states.items() if st.label is not None and fid in embedding]
    vectors = [from_blob(r["embedding"]) for r in refs] + [embedding[fid] for fid, _ in confirmed]
    labels = [int(r["identity_id"]) for r in refs] + [int(label) for _, label in confirmed]
    open_ids = [fid for fid in embedding if fid not in states or not states[fid].reviewed]
    threshold = cfg.candidate_sim if cfg.candidate_sim is not None else float("nan")
    inserts: list[tuple[int, int, float]] = []
    if vectors and open_ids:
        model = fit_gallery_model(np.stack(vectors), np.asarray(labels), fallback_threshold=DEFAULT_CANDIDATE_SIM, centre=centre)
        if cfg.candidate_sim is None:
            threshold = model.threshold
        scores = model.scores(np.stack([embedding[fid] for fid in open_ids]))
        for fid, row in zip(open_ids, scores):
            inserts += [(fid, int(model.classes[j]), float(row[j])) for j in np.flatnonzero(row > threshold)]
    db.set_meta("candidate_threshold", repr(float(threshold)))
    with db.transaction() as c:
        c.executemany("DELETE FROM candidates WHERE face_id = ?", [(fid,) for fid in open_ids])
        c.executemany("INSERT OR REPLACE INTO candidates (face_id, identity_id, similarity) VALUES (?, ?, ?)", inserts)
        c.executemany("UPDATE faces SET cand_done = 1 WHERE id = ?", [(fid,) for fid in embedding])
    return float(threshold), len(open_ids)


#: The candidate threshold when the references cannot calibrate one (one image per character).
DEFAULT_CANDIDATE_SIM = 0.6


# ------------------------------------------------------------------------------------------------
# 8. clusters


def cluster(project: Project, cfg: AssembleConfig, progress: bool = True) -> StageReport:
    """Group representatives by leader clustering: in id order, a crop joins the cluster whose
    leader is most similar when that similarity is above ``cluster_sim``, else it leads a new one.

    The papers do not cluster; this lets a person name a group of crops that no reference
    claims in one answer. Leader clustering (hand-written, a dozen lines over a Faiss index) is
    incremental: a re-run with new crops never moves crops already answered about. Faces of one
    frame are different characters, so a crop never joins a cluster that holds a face of its frame.
    """
    t0, started = time.perf_counter(), now_iso()
    db = project.db
    cluster_sim = _similarity(cfg, "cluster_sim")
    centre = project_centre(project) if cfg.adapt else None
    rows_l = db.query(
        "SELECT c.id AS cid, f.embedding AS embedding FROM clusters c JOIN faces f ON f.id = c.leader_face_id ORDER BY c.id"
    )
    leaders = _Leaders(rows_l, [r["cid"] for r in rows_l], centre)
    todo = db.query(
        "SELECT id, frame_id, embedding FROM faces WHERE dedup_done = 1 AND dup_of IS NULL AND cluster_id IS NULL ORDER BY id"
    )
    in_frame: dict[int, set[int]] = {}  # frame -> the clusters holding one of its faces
    for r in db.query("SELECT frame_id, cluster_id FROM faces WHERE cluster_id IS NOT NULL"):
        in_frame.setdefault(r["frame_id"], set()).add(r["cluster_id"])
    with _bar(len(todo), "cluster", "crop", progress) as bar:
        for start in range(0, len(todo), 256):
            rows = todo[start : start + 256]
            with db.transaction() as c:
                for row in rows:
                    v = centred(from_blob(row["embedding"]).reshape(1, -1), centre)
                    taken = in_frame.setdefault(row["frame_id"], set())
                    target = leaders.match(v, cluster_sim, exclude=taken)
                    if target is None:
                        target = int(c.execute("INSERT INTO clusters (leader_face_id) VALUES (?)", (row["id"],)).lastrowid)
                        leaders.add(v, target)
                    taken.add(target)
                    c.execute("UPDATE faces SET cluster_id = ? WHERE id = ?", (target, row["id"]))
            bar.update(len(rows))
    n = int(db.scalar("SELECT COUNT(*) FROM faces WHERE cluster_id IS NOT NULL") or 0)
    unassigned = db.query(
        "SELECT COUNT(*) AS n, COUNT(DISTINCT cluster_id) AS k FROM faces WHERE cluster_id IS NOT NULL"
        " AND id NOT IN (SELECT face_id FROM candidates)"
    )[0]
    report = StageReport(
        "cluster", "crops", n_in=n, kept=n, done_now=len(todo), seconds=time.perf_counter() - t0,
        note=f"{int(db.scalar('SELECT COUNT(*) FROM clusters') or 0)} clusters; the {unassigned['n']} crops "
        f"without a candidate fall in {unassigned['k']} of them",
    )
    return _record(project, report, started)
