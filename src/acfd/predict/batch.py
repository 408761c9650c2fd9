"""The batch runner: a :class:`~acfd.predict.detector.Detector` over many files, in input order.

:func:`run_detection` runs images (batched) and videos (frame by frame) in this process; a file that
cannot be read is recorded as a failure and the run goes on; Ctrl-C ends the run with what was done
(:attr:`RunResult.interrupted`). :mod:`acfd.predict.ray_engine` returns the same
:class:`RunResult` from Ray Data actors. :func:`write_outputs` writes a result as an iCartoonFace
submission CSV, a JSON list per image or COCO results, atomically.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from acfd.data.formats import coco_image_ids, write_coco_results, write_icartoon_csv
from acfd.data.image_io import load_image
from acfd.data.video import VideoReadError, read_video_info
from acfd.predict.results import Detections, frame_key
from acfd.predict.sources import InputItem
from acfd.predict.visualize import save_image
from acfd.utils import atomic_write_text

if TYPE_CHECKING:  # pragma: no cover - the command line's ONNX pipeline runs without torch
    from acfd.predict.detector import Detector

logger = logging.getLogger(__name__)


class OutputFormat(str, Enum):
    """Formats of a results file."""

    csv = "csv"
    json = "json"
    coco = "coco"


@dataclass
class RunResult:
    """What a detect run produced (in input order)."""

    results: list[tuple[str, Detections]] = field(default_factory=list)  # (key, detections)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    interrupted: bool = False

    @property
    def num_faces(self) -> int:
        return sum(len(d) for _, d in self.results)


def failure_reason(exc: BaseException) -> str:
    """The reason of a failed file, without its path (``FileReadError.reason``) when known."""
    return str(getattr(exc, "reason", None) or exc)


class AnnotatedImages:
    """Writes annotated copies under ``root`` keeping the inputs' relative paths, as ``.jpg``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.used: set[Path] = set()

    def target(self, key: str, frame_index: int | None) -> Path:
        """The file the copy of ``key`` (a frame of it) goes to; reserved, so names never clash."""
        rel = Path(key)
        stem = rel.stem if frame_index is None else f"{rel.stem}_frame{frame_index:06d}"
        out = self.root / rel.parent / f"{stem}.jpg"
        if out in self.used:  # a.png and a.jpg in one folder: keep both
            out = self.root / rel.parent / f"{rel.name if frame_index is None else stem + rel.suffix}.jpg"
        n = 1
        base = out
        while out in self.used:
            out = base.with_name(f"{base.stem}_{n}.jpg")
            n += 1
        self.used.add(out)
        return out

    def planned(self, items: list[InputItem]) -> list[Path]:
        """The files a run over ``items`` writes for its images (to check before the work that
        none of them is an input)."""
        probe = AnnotatedImages(self.root)
        return [probe.target(it.key, None) for it in items if it.kind == "image"]

    def save(self, key: str, image: np.ndarray, dets: Detections) -> None:
        save_image(self.target(key, dets.frame_index), dets.draw(image))


def frame_bar(path: Path, every: int, progress: bool) -> tqdm:
    """A progress bar over a video's kept frames, showing frames per second (hidden when stderr is
    not a terminal); its total comes from the container header, when it has a frame count."""
    try:
        count = read_video_info(path).frame_count
    except VideoReadError:
        count = 0  # the detection that follows reports the error
    return tqdm(total=-(-count // every) if count else None, unit="frame", desc=path.name, file=sys.stderr,
                leave=False, disable=None if progress else True)


def _runs(items: list[InputItem]) -> Iterator[list[InputItem]]:
    """Consecutive images together (batched), each video alone."""
    chunk: list[InputItem] = []
    for it in items:
        if it.kind == "video":
            if chunk:
                yield chunk
                chunk = []
            yield [it]
        else:
            chunk.append(it)
    if chunk:
        yield chunk


def run_detection(
    detector: Detector,
    items: list[InputItem],
    batch_size: int = 1,
    video_every: int = 1,
    save_dir: Path | None = None,
    progress: bool = True,
    on_result: Callable[[str, Detections], None] | None = None,
) -> RunResult:
    """Run ``detector`` over ``items`` in order, collecting results and failures.

    Args:
        detector: the detector.
        items: from :func:`acfd.predict.sources.collect_inputs`.
        batch_size: images (or video frames) per network call.
        video_every: keep every k-th video frame.
        save_dir: write annotated images here.
        progress: show a progress bar on stderr (hidden when stderr is not a terminal).
        on_result: called with each ``(key, detections)`` as it is done (e.g. to print it).
    """
    run = RunResult()
    saver = AnnotatedImages(save_dir) if save_dir is not None else None
    bar = tqdm(total=len(items), unit="file", file=sys.stderr, disable=None if progress else True)

    def emit(key: str, path: Path, dets: Detections, frame: np.ndarray | None = None) -> None:
        run.results.append((key, dets))
        if saver is not None:
            try:
                saver.save(key, frame if frame is not None else load_image(path), dets)
            except Exception as exc:  # noqa: BLE001 - a failed save is reported, the run goes on
                run.failures.append((str(path), f"cannot save the annotated image ({failure_reason(exc)})"))
        if on_result is not None:
            with tqdm.external_write_mode():
                on_result(key, dets)

    try:
        for group in _runs(items):
            if group[0].kind == "video":
                it = group[0]
                bar.set_postfix_str(it.path.name)
                try:
                    frames = detector.detect_video_frames(it.path, every=video_every, batch_size=batch_size)
                    # closed on Ctrl-C too, which stops the thread decoding ahead
                    with contextlib.closing(frames), frame_bar(it.path, video_every, progress) as frame_progress:
                        for frame, dets in frames:
                            emit(frame_key(it.key, int(dets.frame_index or 0)), it.path, dets, frame)
                            frame_progress.update(1)
                except VideoReadError as exc:
                    run.failures.append((str(it.path), failure_reason(exc)))
                bar.update(1)
                continue
            by_path = {it.path: it for it in group}
            for path, out in detector.detect_paths(
                [it.path for it in group], batch_size=batch_size, progress=False
            ):
                if isinstance(out, Exception):
                    run.failures.append((str(path), failure_reason(out)))
                else:
                    emit(by_path[path].key, path, out)
                bar.update(1)
    except KeyboardInterrupt:
        run.interrupted = True
    finally:
        bar.close()
    return run


def submission_names(results: list[tuple[str, Detections]]) -> list[tuple[str, Detections]]:
    """Bare file names for the iCartoonFace submission CSV (its ground truth has no folders);
    names that two inputs share (``a/x.jpg``, ``b/x.jpg``) keep their folders, with a warning."""
    bare = [Path(key).name for key, _ in results]
    counts: dict[str, int] = {}
    for name in bare:
        counts[name] = counts.get(name, 0) + 1
    clashes = sorted(n for n, c in counts.items() if c > 1)
    if clashes:
        logger.warning(
            "%d file name(s) occur in several folders (%s); those keep their folder in the CSV "
            "and will not match an iCartoonFace ground truth",
            len(clashes), ", ".join(clashes[:3]) + (", ..." if len(clashes) > 3 else ""),
        )
    return [(key if counts[name] > 1 else name, d) for name, (key, d) in zip(bare, results)]


def write_outputs(
    run: RunResult,
    out: Path,
    fmt: OutputFormat,
    coco_gt: Path | None = None,
    coco_ids: dict[str, int] | None = None,
) -> list[tuple[str, str]]:
    """Write the results file atomically.

    Args:
        run: the detections.
        out: output file.
        fmt: csv (iCartoonFace submission), json (per image) or coco (results list).
        coco_gt: a COCO ground truth whose image ids the coco results use.
        coco_ids: its ``file_name -> id`` map, when already read.

    Returns:
        ``(key, reason)`` for results that could not be written (coco: not in the ground truth).
    """
    problems: list[tuple[str, str]] = []
    if fmt is OutputFormat.csv:
        write_icartoon_csv(out, [d.to_record(name) for name, d in submission_names(run.results)], kind="submission")
    elif fmt is OutputFormat.json:
        data = [d.to_dict(key) for key, d in run.results]
        atomic_write_text(out, json.dumps(data, indent=1) + "\n")
    else:
        records = []
        if coco_gt is not None:
            ids = coco_ids if coco_ids is not None else coco_image_ids(coco_gt)
            by_base: dict[str, str] = {}
            for name in ids:
                by_base.setdefault(Path(name).name, name)
            for key, d in run.results:
                name = key if key in ids else by_base.get(Path(key).name)
                if name is None:
                    problems.append((key, f"not an image of the ground truth {coco_gt}"))
                    continue
                records.append(d.to_record(name))
        else:
            ids = {}
            for i, (key, d) in enumerate(run.results, start=1):
                ids[key] = i
                records.append(d.to_record(key))
            if records:
                logger.info("COCO image ids are 1..%d in input order (pass --coco-gt for a ground truth's ids)", len(records))
        write_coco_results(out, records, ids)
    return problems


def partial_path(out: Path) -> Path:
    """Where the results of an interrupted run go: ``subs.csv`` -> ``subs.partial.csv`` (never the
    real name, so a partial submission cannot be taken for a finished one)."""
    return out.with_name(f"{out.stem}.partial{out.suffix}")


__all__ = [
    "AnnotatedImages",
    "OutputFormat",
    "RunResult",
    "failure_reason",
    "partial_path",
    "run_detection",
    "submission_names",
    "write_outputs",
]
