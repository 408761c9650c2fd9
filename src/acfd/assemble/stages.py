"""The stages of the semi-automatic assembling pipeline (arXiv recognition paper section "Dataset"
and its Fig. 3; MM'20 section 3.1), each a small resumable step over the project database.

``ingest`` (sources -> frames) -> ``detect`` (frames -> faces) -> ``crop`` (enlarged crops; drop
small and blurred) -> ``embed`` -> ``dedup`` (near-duplicates and face tracks) -> ``references``
(reference set -> embeddings) -> ``candidates`` (characters whose prototype is close) -> ``cluster``
(group what the references leave, for naming a group at once). Stages 5-8 live in
:mod:`acfd.assemble.grouping`, what they share in :mod:`acfd.assemble.reports`; this module is
the pipeline's one interface to all of them.

Every stage picks only the work its earlier runs have not finished, commits each unit of work in
one transaction with its "done" flag, shows a tqdm bar and returns a :class:`StageReport` with the
project's totals (in, kept, dropped and why) and what this run did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from acfd.assemble.config import AssembleConfig
from acfd.assemble.db import now_iso, to_blob
from acfd.assemble.grouping import (  # stages 5-8, part of this module's interface (__all__)
    DEFAULT_CANDIDATE_SIM,
    MIN_CROPS_TO_ADAPT,
    TRACK_IOU,
    add_references,
    candidates,
    cluster,
    dedup,
    project_adaptation,
    refit_candidates,
)
from acfd.assemble.project import Project, write_jpeg
from acfd.assemble.quality import crop_resolution, laplacian_variance, quality_verdict
from acfd.assemble.reports import (
    Embedder,
    StageReport,
    check_embedder_model,
    count_rows,
    progress_bar,
    record_report,
)
from acfd.data.image_io import ImageReadError, load_image, read_image_size
from acfd.recognition.crops import crop_face
from acfd.utils import FileReadError

logger = logging.getLogger(__name__)

#: ``finder(frames RGB, frame keys) -> [(boxes (N, 4) x1y1x2y2, scores (N,)), ...]``.
FaceFinder = Callable[[Sequence[np.ndarray], Sequence[str]], list[tuple[np.ndarray, np.ndarray]]]

__all__ = [
    "DEFAULT_CANDIDATE_SIM", "MIN_CROPS_TO_ADAPT", "TRACK_IOU", "Embedder", "FaceFinder", "RayDetection", "StageReport",
    "add_references", "boxes_finder", "candidates", "cluster", "crop", "dedup", "detect", "detect_on_ray",
    "detector_finder", "embed", "ingest", "project_adaptation", "refit_candidates",
]

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
    from acfd.data.video import iter_video_frames
    from acfd.predict.sources import (
        collect_inputs,  # the one expansion of files/folders/globs
    )

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
    with progress_bar(len(todo), "ingest", "src", progress) as bar:
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
    status = count_rows(project, "SELECT status, COUNT(*) FROM sources GROUP BY status")
    n_frames = int(db.scalar("SELECT COUNT(*) FROM frames") or 0)
    report = StageReport(
        "ingest", "sources", n_in=sum(status.values()), kept=status["done"],
        dropped={"unreadable": status["failed"]} if status["failed"] else {},
        done_now=done_now, seconds=time.perf_counter() - t0, note=f"{n_frames} frames",
    )
    return record_report(project, report, started)


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
    with progress_bar(len(todo), "detect", "frame", progress) as bar:
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
        with ray_session(ray_detection.address), progress_bar(len(todo), "detect (ray)", "frame", progress) as bar:
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
    faces = count_rows(project, "SELECT status, COUNT(*) FROM faces GROUP BY status")
    below = {k: faces[k] for k in ("low_score", "empty_box") if faces[k]}
    report = StageReport(
        "detect", "frames", n_in=n_frames, kept=n_frames - errors,
        dropped={"unreadable": errors} if errors else {}, done_now=done_now,
        seconds=time.perf_counter() - t0,
        note=f"{sum(faces.values()) - sum(below.values())} faces above score {cfg.score_thr}"
        + (f" ({', '.join(f'{n} {k}' for k, n in below.items())} not kept)" if below else ""),
    )
    return record_report(project, report, started)


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
    with progress_bar(len(todo), "crop", "face", progress) as bar:
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
    faces = count_rows(
        project, "SELECT status, COUNT(*) FROM faces WHERE status NOT IN ('new', 'low_score', 'empty_box') GROUP BY status"
    )
    report = StageReport(
        "crop", "faces", n_in=sum(faces.values()), kept=faces["kept"],
        dropped={k: n for k, n in faces.items() if k != "kept"}, done_now=len(todo),
        seconds=time.perf_counter() - t0,
    )
    return record_report(project, report, started)


# ------------------------------------------------------------------------------------------------
# 4. crops -> embeddings


def embed(project: Project, embedder: Embedder, batch_size: int = 64, progress: bool = True) -> StageReport:
    """Embed every kept crop that has no embedding yet (L2-normalised rows, stored in the database).

    Raises:
        ValueError: the project's embeddings come from another model.
    """
    t0, started = time.perf_counter(), now_iso()
    db = project.db
    check_embedder_model(project, "embedder_model_id", embedder)
    todo = [r["id"] for r in db.query("SELECT id FROM faces WHERE status = 'kept' AND embedding IS NULL ORDER BY id")]
    with progress_bar(len(todo), "embed", "crop", progress) as bar:
        for start in range(0, len(todo), batch_size):
            ids = todo[start : start + batch_size]
            crops = [load_image(project.crop_file(i)) for i in ids]
            vectors = np.asarray(embedder.embed(crops), dtype=np.float32)
            with db.transaction() as c:
                c.executemany("UPDATE faces SET embedding = ? WHERE id = ?", [(to_blob(v), i) for v, i in zip(vectors, ids)])
            bar.update(len(ids))
    n = int(db.scalar("SELECT COUNT(*) FROM faces WHERE status = 'kept'") or 0)
    report = StageReport("embed", "crops", n_in=n, kept=n, done_now=len(todo), seconds=time.perf_counter() - t0)
    return record_report(project, report, started)
