"""Batch detection on Ray Data: ``acfd detect SOURCES --engine ray [--address ADDR]``.

The inputs (from :func:`acfd.predict.sources.collect_inputs`) become a Ray dataset of
``(index, path, key, kind)`` rows; ``map_batches`` runs them through a pool of actors, each loading
the model once (one GPU per actor when the detector runs on CUDA, else ``cpus_per_actor`` CPUs);
every output row (an image, or a video frame) is written to Parquet shards; the driver reads the
shards back, sorts them into input order and returns the same :class:`~acfd.predict.batch.RunResult`
the local engine returns, so the submission CSV / JSON / COCO file is written by the same code.

Fault tolerance is Ray's: the actor pool restarts a dead actor and re-runs its task
(``max_restarts=-1``, ``max_task_retries=-1``); rows carry their input index, and the merge keeps
one row per ``(index, frame)`` and reports any input that has none, so a retry can neither lose nor
duplicate rows. A file that cannot be read is a failure row, never a failed task.

Without ``address`` a local Ray is started on this machine (and shut down afterwards); with one,
the job joins that cluster (``ray://head:10001`` or ``auto``). On a multi-node cluster the inputs and
the shard folder must be on storage every node sees (``$ACFD_RAY_SHARDS``: a shared folder or an
``s3://`` / ``gs://`` URI).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from acfd.predict.batch import RunResult, failure_reason
from acfd.predict.detector import Detector
from acfd.predict.results import Detections, frame_key
from acfd.predict.sources import InputItem
from acfd.utils import FileReadError

logger = logging.getLogger(__name__)

#: Where the Parquet shards go (a folder or a URI every node can reach); default a temp folder.
SHARDS_ENV = "ACFD_RAY_SHARDS"


class DetectActor:
    """One Ray actor: loads the detector once, then detects faces in batches of input rows.

    Args:
        detector_kwargs: :class:`acfd.predict.detector.Detector` arguments.
        batch_size: images per network call.
        video_every: keep every k-th video frame.
        torch_threads: torch CPU threads in this actor.
        fault_marker: tests only: the first actor to see this file missing creates it and dies,
            mid-run, to check that Ray retries the work.
    """

    def __init__(
        self,
        detector_kwargs: dict[str, Any],
        batch_size: int = 1,
        video_every: int = 1,
        torch_threads: int | None = None,
        fault_marker: str | None = None,
    ) -> None:
        if torch_threads:
            torch.set_num_threads(torch_threads)
            if detector_kwargs.get("threads") is None:  # ONNX Runtime: the actor's CPUs, not the machine's
                detector_kwargs = {**detector_kwargs, "threads": torch_threads}
        self.detector = Detector(**detector_kwargs)
        self.batch_size = batch_size
        self.video_every = video_every
        self.fault_marker = fault_marker

    def _maybe_die(self) -> None:
        if self.fault_marker is None:
            return
        try:
            fd = os.open(self.fault_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)  # a crashed worker process, as an OOM kill or a lost node would leave it

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        self._maybe_die()
        rows: list[dict[str, Any]] = []
        indices = [int(i) for i in batch["index"]]
        paths = [str(p) for p in batch["path"]]
        kinds = [str(k) for k in batch["kind"]]
        images = [(i, p) for i, p, k in zip(indices, paths, kinds) if k == "image"]
        for (index, _), (_, out) in zip(
            images, self.detector.detect_paths([p for _, p in images], batch_size=self.batch_size, progress=False)
        ):
            rows.append(_row(index, 0, out))
        for index, path, kind in zip(indices, paths, kinds):
            if kind != "video":
                continue
            try:
                frames = self.detector.detect_video_frames(path, every=self.video_every, batch_size=self.batch_size)
                for sub, (_, dets) in enumerate(frames):
                    rows.append(_row(index, sub, dets))
            except (FileReadError, OSError) as exc:
                rows.append(_row(index, 0, exc))
        return {name: [r[name] for r in rows] for name in _COLUMNS}


_COLUMNS = ("index", "sub", "error", "height", "width", "boxes", "scores", "frame_index", "timestamp")


def _row(index: int, sub: int, out: Any) -> dict[str, Any]:
    """One output row; boxes and scores as JSON text (float32 values round-trip exactly)."""
    if isinstance(out, BaseException):
        reason = failure_reason(out)
        return dict(zip(_COLUMNS, (index, sub, reason, 0, 0, "[]", "[]", -1, float("nan"))))
    h, w = out.image_size
    return dict(
        zip(
            _COLUMNS,
            (
                index,
                sub,
                "",
                h,
                w,
                json.dumps(out.boxes.tolist()),
                json.dumps(out.scores.tolist()),
                -1 if out.frame_index is None else int(out.frame_index),
                float("nan") if out.timestamp is None else float(out.timestamp),
            ),
        )
    )


def merge_rows(items: Sequence[InputItem], rows: Sequence[dict[str, Any]]) -> RunResult:
    """The shards' rows in input order as a :class:`~acfd.predict.batch.RunResult`.

    One row per ``(index, sub)`` is kept (a retried task may have written a row twice); an input
    with no row at all is reported as a failure.
    """
    unique: dict[tuple[int, int], dict[str, Any]] = {}
    for row in rows:
        unique.setdefault((int(row["index"]), int(row["sub"])), row)
    run = RunResult()
    seen: set[int] = set()
    for (index, _), row in sorted(unique.items()):
        item = items[index]
        seen.add(index)
        if row["error"]:
            run.failures.append((str(item.path), str(row["error"])))
            continue
        frame = int(row["frame_index"])
        dets = Detections(
            np.asarray(json.loads(row["boxes"]), dtype=np.float32),
            np.asarray(json.loads(row["scores"]), dtype=np.float32),
            (int(row["height"]), int(row["width"])),
            source=str(item.path),
            frame_index=None if frame < 0 else frame,
            timestamp=None if frame < 0 or math.isnan(row["timestamp"]) else float(row["timestamp"]),
        )
        run.results.append((item.key if frame < 0 else frame_key(item.key, frame), dets))
    for index, item in enumerate(items):
        if index not in seen:
            run.failures.append((str(item.path), "no result came back from the Ray job"))
    return run


def _actor_resources(device: str, cpus_per_actor: int) -> dict[str, float]:
    return {"num_gpus": 1} if device.startswith("cuda") else {"num_cpus": cpus_per_actor}


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """Use the Ray already initialised in this process, or start one for the block (``address``: an
    existing cluster such as ``auto`` or ``ray://host:10001``; ``None``: a local Ray) and shut it
    down afterwards. Shared by ``acfd detect --engine ray`` and ``acfd assemble --engine ray``."""
    import ray  # the optional "ray" extra

    if ray.is_initialized():
        if address is not None:
            logger.warning("Ray is already initialised in this process; ignoring --address %s", address)
        yield
        return
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def run_detection_ray(
    items: Sequence[InputItem],
    detector_kwargs: dict[str, Any],
    batch_size: int = 1,
    video_every: int = 1,
    address: str | None = None,
    num_actors: int | None = None,
    cpus_per_actor: int = 1,
    rows_per_task: int = 16,
    shards: str | None = None,
    progress: bool = True,
    _fault_marker: str | None = None,
) -> RunResult:
    """Detect faces in ``items`` on Ray Data (see the module docstring).

    Args:
        items: from :func:`acfd.predict.sources.collect_inputs`.
        detector_kwargs: :class:`~acfd.predict.detector.Detector` arguments for every actor.
        batch_size: images per network call.
        video_every: keep every k-th video frame.
        address: an existing cluster (``auto``, ``ray://host:10001``); ``None`` starts a local Ray
            (or uses the one already started in this process).
        num_actors: actor pool size; default: the cluster's GPUs (CUDA) or CPUs / ``cpus_per_actor``,
            at most one per task.
        cpus_per_actor: CPUs (and torch threads) per actor on CPU.
        rows_per_task: inputs per Ray task (also the unit that is retried).
        shards: folder or URI for the Parquet shards (default ``$ACFD_RAY_SHARDS`` or a temp
            folder that is removed afterwards).
        progress: Ray Data progress bars.
        _fault_marker: tests only (see :class:`DetectActor`).
    """
    import ray  # the optional "ray" extra

    if not items:
        return RunResult()
    with ray_session(address):
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        shards = shards or os.environ.get(SHARDS_ENV)
        temp_dir = None if shards else tempfile.mkdtemp(prefix="acfd-ray-shards-")
        target = f"{shards.rstrip('/')}/{uuid.uuid4().hex}" if shards else temp_dir  # never mix with older shards
        try:
            device = str(detector_kwargs.get("device", "cpu"))
            resources = _actor_resources(device, cpus_per_actor)
            cluster = ray.cluster_resources()
            capacity = cluster.get("GPU", 0) if "num_gpus" in resources else cluster.get("CPU", 1) // cpus_per_actor
            n_tasks = math.ceil(len(items) / rows_per_task)
            pool = max(1, min(int(num_actors or capacity or 1), n_tasks))
            ds = ray.data.from_items(
                [{"index": i, "path": str(it.path), "key": it.key, "kind": it.kind} for i, it in enumerate(items)],
                override_num_blocks=n_tasks,
            )
            ds = ds.map_batches(
                DetectActor,
                fn_constructor_kwargs={
                    "detector_kwargs": detector_kwargs,
                    "batch_size": batch_size,
                    "video_every": video_every,
                    "torch_threads": None if "num_gpus" in resources else cpus_per_actor,
                    "fault_marker": _fault_marker,
                },
                batch_size=rows_per_task,
                compute=ray.data.ActorPoolStrategy(size=pool),
                batch_format="numpy",
                **resources,
            )
            ds.write_parquet(target)
            import pyarrow.parquet as pq  # comes with the "ray" extra; the driver reads the shards itself (a Ray read job costs seconds)

            rows = pq.read_table(target).to_pylist()
            logger.info("ray: %d inputs, %d actors, %d result rows from %s", len(items), pool, len(rows), target)
            return merge_rows(items, rows)
        finally:
            if temp_dir is not None:
                shutil.rmtree(temp_dir, ignore_errors=True)


__all__ = ["DetectActor", "SHARDS_ENV", "merge_rows", "ray_session", "run_detection_ray"]
