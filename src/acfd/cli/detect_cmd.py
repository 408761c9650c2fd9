"""``acfd detect``: find faces in images, folders, globs and videos.

Every input that cannot be read gets a one-line ``path: reason`` and the run goes on; the exit
code is 0 when everything was read, 1 when something failed, 2 when nothing could be read and 130
after Ctrl-C. Outputs are checked before the work (writable, not overwriting an input, the
``--coco-gt`` file readable) and written atomically at the end; after Ctrl-C the results so far
go to ``<name>.partial<suffix>`` (never to the real output name, so a partial submission cannot be
taken for a finished one).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import typer
from tqdm.auto import tqdm

from acfd.cli.errors import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    check_device,
    check_not_inputs,
    check_output_dir,
    check_output_file,
    fail,
    one_line_errors,
)
from acfd.engine import defaults

if TYPE_CHECKING:  # pragma: no cover
    from acfd.engine.infer import Detections, Detector

logger = logging.getLogger(__name__)

_GLOB_CHARS = set("*?[")


class OutputFormat(str, Enum):
    """Formats of ``-o``."""

    csv = "csv"
    json = "json"
    coco = "coco"


@dataclass(frozen=True)
class InputItem:
    """One file to process.

    Args:
        path: the file.
        key: its name in the outputs (relative to the folder or glob it came from).
        kind: ``"image"`` or ``"video"``.
    """

    path: Path
    key: str
    kind: str


@dataclass
class RunResult:
    """What a detect run produced (in input order)."""

    results: list[tuple[str, Detections]] = field(default_factory=list)  # (key, detections)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    interrupted: bool = False

    @property
    def num_faces(self) -> int:
        return sum(len(d) for _, d in self.results)


def _kind_of(path: Path) -> str | None:
    from acfd.data.image_io import is_image_file
    from acfd.data.video import is_video_file

    if is_image_file(path):
        return "image"
    if is_video_file(path):
        return "video"
    return None


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _glob_base(pattern: str) -> Path:
    """The longest leading folder of ``pattern`` without glob characters."""
    parts = Path(pattern).parts
    base: list[str] = []
    for part in parts[:-1]:
        if _GLOB_CHARS & set(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def collect_inputs(args: list[str]) -> tuple[list[InputItem], list[tuple[str, str]]]:
    """Expand files, folders (recursively) and glob patterns into images and videos.

    Files in folders or glob matches whose suffix is neither an image nor a video suffix are
    skipped (logged); such a file named explicitly is a failure, as is a missing path.

    Args:
        args: the PATH arguments.

    Returns:
        ``(items, failures)``: unique inputs in argument order, and ``(path, reason)`` pairs.
    """
    from acfd.data.image_io import IMAGE_EXTENSIONS
    from acfd.data.video import VIDEO_EXTENSIONS

    items: list[InputItem] = []
    failures: list[tuple[str, str]] = []
    seen_paths: set[Path] = set()
    seen_keys: set[str] = set()
    skipped = 0

    def add(path: Path, key: str, kind: str) -> None:
        resolved = path.resolve()
        if resolved in seen_paths:
            return
        seen_paths.add(resolved)
        if key in seen_keys:  # same relative name from two arguments: use the path as given
            key = path.as_posix()
        seen_keys.add(key)
        items.append(InputItem(path, key, kind))

    def add_tree(root: Path, base: Path) -> None:
        nonlocal skipped
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(base)
            if not p.is_file() or _hidden(p.relative_to(root)):
                continue
            kind = _kind_of(p)
            if kind is None:
                skipped += 1
                logger.debug("skipping %s (not an image or video suffix)", p)
                continue
            add(p, rel.as_posix(), kind)

    for arg in args:
        path = Path(arg)
        if path.is_dir():
            before = len(items)
            add_tree(path, path)
            if len(items) == before:
                failures.append((arg, "no images or videos in this folder"))
        elif path.is_file():
            kind = _kind_of(path)
            if kind is None:
                failures.append(
                    (
                        arg,
                        f"unsupported file type {path.suffix or '(no suffix)'!r}; images: "
                        f"{' '.join(sorted(IMAGE_EXTENSIONS))}; videos: "
                        f"{' '.join(sorted(VIDEO_EXTENSIONS))}",
                    )
                )
            else:
                add(path, path.name, kind)
        elif _GLOB_CHARS & set(arg):
            base = _glob_base(arg)
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                failures.append((arg, "no files match this pattern"))
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    add_tree(mp, base)
                elif mp.is_file():
                    kind = _kind_of(mp)
                    if kind is None:
                        skipped += 1
                        continue
                    rel = os.path.relpath(mp, base)
                    add(mp, Path(rel).as_posix() if not rel.startswith("..") else mp.as_posix(), kind)
        elif path.exists() or path.is_symlink():
            failures.append((arg, "not a regular file or folder (broken link?)"))
        else:
            failures.append((arg, "no such file or directory"))
    if skipped:
        logger.info("skipped %d file(s) that are neither images nor videos", skipped)
    return items, failures


def _frame_key(key: str, frame_index: int) -> str:
    return f"{key}#frame={frame_index:06d}"


class _ImageSaver:
    """Writes annotated copies under ``root`` keeping the inputs' relative paths, as ``.jpg``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.used: set[Path] = set()

    def target(self, key: str, frame_index: int | None) -> Path:
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

    def check_inputs(self, items: list[InputItem]) -> None:
        """Refuse a folder where an annotated copy would replace an input (inputs are never
        overwritten); the planned names are reserved, so the run writes exactly these."""
        probe = _ImageSaver(self.root)
        check_not_inputs_any(
            [probe.target(it.key, None) for it in items if it.kind == "image"],
            [it.path for it in items],
        )

    def save(self, key: str, image: np.ndarray, dets: Detections) -> None:
        from acfd.engine.visualize import save_image

        save_image(self.target(key, dets.frame_index), dets.draw(image))


def check_not_inputs_any(outputs: list[Path], inputs: list[Path]) -> None:
    """:func:`~acfd.cli.errors.check_not_inputs` for many outputs (``--save-images`` copies)."""
    resolved = {p.resolve(): p for p in inputs}
    for out in outputs:
        if out.resolve() in resolved:
            check_not_inputs(out, [resolved[out.resolve()]], "--save-images")


def _summary_lines(key: str, dets: Detections) -> list[str]:
    """``key: N faces`` and one ``  x1 y1 x2 y2  score`` line per face (pixels, descending score)."""
    n = len(dets)
    where = f" ({dets.timestamp:.2f} s)" if dets.timestamp is not None else ""
    lines = [f"{key}{where}: {n} face{'s' if n != 1 else ''}"]
    lines += [
        f"  {x1:7.1f} {y1:7.1f} {x2:7.1f} {y2:7.1f}  {s:.2f}" for (x1, y1, x2, y2), s in zip(dets.boxes.tolist(), dets.scores)
    ]
    return lines


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or exc)


def run_detection(
    detector: Detector,
    items: list[InputItem],
    batch_size: int = 1,
    video_every: int = 1,
    save_dir: Path | None = None,
    progress: bool = True,
    echo_summary: bool = False,
) -> RunResult:
    """Run ``detector`` over ``items`` in order, collecting results and failures.

    Args:
        detector: an :class:`acfd.engine.infer.Detector`.
        items: from :func:`collect_inputs`.
        batch_size: images (or video frames) per network call.
        video_every: keep every k-th video frame.
        save_dir: write annotated images here.
        progress: show a progress bar on stderr (hidden when stderr is not a terminal).
        echo_summary: print one line per image as it is done.
    """
    from acfd.data.image_io import load_image
    from acfd.data.video import VideoReadError

    run = RunResult()
    saver = _ImageSaver(save_dir) if save_dir is not None else None
    bar = tqdm(total=len(items), unit="file", file=sys.stderr, disable=None if progress else True)

    def emit(key: str, path: Path, dets: Detections, frame: np.ndarray | None = None) -> None:
        run.results.append((key, dets))
        if saver is not None:
            try:
                saver.save(key, frame if frame is not None else load_image(path), dets)
            except Exception as exc:  # noqa: BLE001 - a failed save is reported, the run goes on
                run.failures.append((str(path), f"cannot save the annotated image ({_reason(exc)})"))
        if echo_summary:
            with tqdm.external_write_mode():
                typer.echo("\n".join(_summary_lines(key, dets)))

    def runs() -> Iterator[list[InputItem]]:
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

    try:
        for group in runs():
            if group[0].kind == "video":
                it = group[0]
                bar.set_postfix_str(it.path.name)
                try:
                    frames = detector.detect_video_frames(it.path, every=video_every, batch_size=batch_size)
                    for frame, dets in frames:
                        emit(_frame_key(it.key, int(dets.frame_index or 0)), it.path, dets, frame)
                except VideoReadError as exc:
                    run.failures.append((str(it.path), _reason(exc)))
                bar.update(1)
                continue
            by_path = {it.path: it for it in group}
            for path, out in detector.detect_paths(
                [it.path for it in group], batch_size=batch_size, progress=False
            ):
                if isinstance(out, Exception):
                    run.failures.append((str(path), _reason(out)))
                else:
                    emit(by_path[path].key, path, out)
                bar.update(1)
    except KeyboardInterrupt:
        run.interrupted = True
    finally:
        bar.close()
    return run


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
    from acfd.data.formats import coco_image_ids, write_coco_results, write_icartoon_csv
    from acfd.utils import atomic_write_text

    problems: list[tuple[str, str]] = []
    if fmt is OutputFormat.csv:
        write_icartoon_csv(out, [d.to_record(name) for name, d in _submission_names(run.results)], kind="submission")
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


def _submission_names(results: list[tuple[str, Detections]]) -> list[tuple[str, Detections]]:
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


def _partial_path(out: Path) -> Path:
    """Where results go after Ctrl-C: ``subs.csv`` -> ``subs.partial.csv``."""
    return out.with_name(f"{out.stem}.partial{out.suffix}")


def _guess_format(out: Path, fmt: OutputFormat | None) -> OutputFormat:
    if fmt is not None:
        return fmt
    suffix = out.suffix.lower()
    if suffix == ".csv":
        return OutputFormat.csv
    if suffix == ".json":
        return OutputFormat.json
    raise typer.BadParameter(
        f"cannot tell the format from {out.name!r}; use a .csv / .json name or --format",
        param_hint="'--format'",
    )


def detect(
    paths: list[str] = typer.Argument(..., help="Images, folders (recursive), globs or videos."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write all detections to this file (format from --format or the suffix)."
    ),
    fmt: OutputFormat | None = typer.Option(
        None, "--format", "-f", help="csv: iCartoonFace submission; json: per image; coco: results list."
    ),
    save_images: Path | None = typer.Option(
        None, "--save-images", help="Write each image with its boxes drawn into this folder (.jpg)."
    ),
    score_thresh: float | None = typer.Option(
        None,
        "--score-thresh",
        "--score-thr",
        min=0.0,
        max=1.0,
        help="Keep boxes scoring above this (the reported scores: calibrated when the weights hold a calibration).",
        show_default=f"{defaults.DEFAULT_SCORE_THRESH}; with --eval none above a raw network score of {defaults.EVAL_SCORE_THRESH}",
    ),
    scales: str | None = typer.Option(
        None,
        "--scales",
        help="Test scales: HxW resizes exactly, N sets the longer side; comma-separated for "
        "multi-scale, or 'paper' (480x645,640x860,800x1075). A scale may add :max<N> (keep only its "
        "boxes under N px in its input) and :noflip (never mirrored), e.g. 960:max128:noflip.",
        show_default=f"{','.join(defaults.DEFAULT_SCALES)}; {','.join(defaults.EVAL_SCALES)} with --eval",
    ),
    eval_mode: bool = typer.Option(
        False,
        "--eval",
        help=f"Settings for AP and submissions: every box with a raw network score above {defaults.EVAL_SCORE_THRESH} (the paper's protocol), "
        f"--scales {','.join(defaults.EVAL_SCALES)}{' --flip' if defaults.EVAL_FLIP else ''} --nms-thresh {defaults.EVAL_NMS_THRESH} "
        f"--agreement-iou {defaults.EVAL_AGREEMENT_IOU or 0} (the shipped model's best on dev; "
        "--scales paper --no-flip --nms-thresh 0.55 --agreement-iou 0 is the paper's protocol).",
    ),
    flip: bool | None = typer.Option(
        None,
        "--flip/--no-flip",
        help="Test-time flip: also run each scale (but :noflip ones) on the mirrored image and merge (about twice the time).",
        show_default=f"off; {'on' if defaults.EVAL_FLIP else 'off'} with --eval",
    ),
    nms_thresh: float | None = typer.Option(
        None,
        "--nms-thresh",
        min=0.01,
        max=1.0,
        help="NMS IoU threshold (across scales and views).",
        show_default=f"{defaults.DEFAULT_NMS_THRESH}; {defaults.EVAL_NMS_THRESH} with --eval",
    ),
    agreement_iou: float | None = typer.Option(
        None,
        "--agreement-iou",
        min=0.0,
        max=1.0,
        help="With several scales or --flip: rescore each face by how many views found it at this IoU "
        "(0 turns it off).",
        show_default=f"off; {defaults.EVAL_AGREEMENT_IOU or 'off'} with --eval",
    ),
    calibration: bool = typer.Option(
        True,
        "--calibration/--no-calibration",
        help="Use the score calibration stored with the weights (acfd calibrate): scores become the "
        "precision of a box of that size and score on training images; --no-calibration: raw network scores.",
    ),
    verifier: bool = typer.Option(
        True,
        "--verifier/--no-verifier",
        help="Re-score and refine each box with the second-stage face verifier shipped beside the weights "
        "(NAME-verifier.safetensors, acfd train-verifier), when there is one for them; --no-verifier: the detector alone.",
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1..."),
    half: bool = typer.Option(False, "--half", help="float16 inference (CUDA only)."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Images per network call."),
    model: str | None = typer.Option(
        None,
        "--model",
        help="Model name (acfd-l, acfd-s...; random weights without --weights), a weights file, "
        "or an exported .onnx file.",
        show_default="the shipped model",
    ),
    weights: Path | None = typer.Option(None, "--weights", help="Weights (.safetensors) or checkpoint (.pt)."),
    video_every: int = typer.Option(1, "--video-every", min=1, help="Use every k-th video frame."),
    coco_gt: Path | None = typer.Option(
        None, "--coco-gt", help="COCO ground truth JSON whose image ids --format coco uses."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
    engine: str = typer.Option(
        "local", "--engine", help="local: this process; ray: Ray Data actors (pip install 'acfd[ray]')."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster to join with --engine ray (auto, ray://host:10001).", show_default="a local Ray"
    ),
) -> None:
    """Find cartoon faces in images and videos.

    Without -o, prints each image's faces (box x1 y1 x2 y2 in pixels, score). Prints 'N images,
    M faces, K failed' at the end and lists each failure as 'path: reason'. Exit code 1 when an
    input failed, 2 when nothing could be read, 130 after Ctrl-C.
    """
    try:
        _detect(paths, output, fmt, save_images, score_thresh, scales, eval_mode, device, half,
                batch_size, model, weights, video_every, coco_gt, progress, engine, address,
                flip=flip, nms_thresh=nms_thresh, agreement_iou=agreement_iou, calibration=calibration,
                verifier=verifier)
    except KeyboardInterrupt:  # Ctrl-C before the run started (loading the model...)
        typer.echo("interrupted before any image was done: nothing was written", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


@one_line_errors
def _detect(
    paths: list[str],
    output: Path | None,
    fmt: OutputFormat | None,
    save_images: Path | None,
    score_thresh: float | None,
    scales: str | None,
    eval_mode: bool,
    device: str,
    half: bool,
    batch_size: int,
    model: str | None,
    weights: Path | None,
    video_every: int,
    coco_gt: Path | None,
    progress: bool,
    engine: str = "local",
    address: str | None = None,
    flip: bool | None = None,
    nms_thresh: float | None = None,
    agreement_iou: float | None = None,
    calibration: bool = True,
    verifier: bool = True,
) -> None:
    from acfd.engine.infer import Detector, parse_scales

    out_fmt = _guess_format(output, fmt) if output is not None else fmt
    if out_fmt is not None and output is None:
        raise typer.BadParameter("--format needs an output file (-o)", param_hint="'--format'")
    try:
        scale_list = parse_scales(scales if scales is not None else (defaults.EVAL_SCALES if eval_mode else None))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--scales'") from exc
    # --eval: the paper's floor on the network's own scores, every (calibrated) score above it kept
    raw_score_floor = defaults.EVAL_SCORE_THRESH if eval_mode else None
    if score_thresh is None and eval_mode:
        score_thresh = 0.0
    if flip is None:
        flip = defaults.EVAL_FLIP if eval_mode else False
    if nms_thresh is None:
        nms_thresh = defaults.EVAL_NMS_THRESH if eval_mode else defaults.DEFAULT_NMS_THRESH
    if agreement_iou is None:
        agreement_iou = defaults.EVAL_AGREEMENT_IOU if eval_mode else None
    agreement_iou = agreement_iou or None  # 0 turns it off
    check_device(device)
    if engine not in ("local", "ray"):
        raise typer.BadParameter(f"unknown engine {engine!r}: local or ray", param_hint="'--engine'")
    if engine == "ray" and save_images is not None:
        fail("--save-images is not supported with --engine ray (draw the boxes from the -o results)", EXIT_USAGE)

    items, failures = collect_inputs(paths)
    if not items:
        for path, reason in failures:
            typer.echo(f"{path}: {reason}", err=True)
        typer.echo("0 images, 0 faces, %d failed" % len(failures))
        raise typer.Exit(EXIT_USAGE)

    # Everything that can be checked before the work (a run can take hours).
    coco_ids = None
    if output is not None:
        check_output_file(output, "-o")
        check_not_inputs(output, [it.path for it in items], "-o")
    if coco_gt is not None:
        if out_fmt is not OutputFormat.coco:
            logger.warning("--coco-gt is only used with --format coco; ignored")
        else:
            from acfd.data.formats import coco_image_ids

            if not coco_gt.is_file():
                fail(f"--coco-gt {coco_gt}: ground-truth file not found")
            coco_ids = coco_image_ids(coco_gt)  # a bad file: one line naming it, before the work
    if save_images is not None:
        check_output_dir(save_images, "--save-images")
        _ImageSaver(save_images).check_inputs(items)

    if engine == "ray":  # Ray Data actors; the same RunResult, written below by the same code
        from acfd.engine.ray_engine import run_detection_ray

        detector_kwargs = dict(model=model, weights=weights, device=device, scales=scale_list,
                               score_thresh=score_thresh, half=half, batch_size=batch_size,
                               flip=flip, nms_thresh=nms_thresh, agreement_iou=agreement_iou,
                               raw_score_floor=raw_score_floor, calibration="auto" if calibration else None,
                               verifier="auto" if verifier else None)
        with one_line_errors(context="Ray run failed", code=EXIT_USAGE):
            run = run_detection_ray(items, detector_kwargs, batch_size=batch_size, video_every=video_every,
                                    address=address, progress=progress)
        if output is None:
            for key, dets in run.results:
                typer.echo("\n".join(_summary_lines(key, dets)))
    else:
        with one_line_errors(context="cannot load the model", code=EXIT_USAGE):
            detector = Detector(
                model=model,
                weights=weights,
                device=device,
                scales=scale_list,
                score_thresh=score_thresh,
                half=half,
                batch_size=batch_size,
                flip=flip,
                nms_thresh=nms_thresh,
                agreement_iou=agreement_iou,
                raw_score_floor=raw_score_floor,
                calibration="auto" if calibration else None,
                verifier="auto" if verifier else None,
            )
        logger.debug("%r", detector)

        run = run_detection(
            detector,
            items,
            batch_size=batch_size,
            video_every=video_every,
            save_dir=save_images,
            progress=progress,
            echo_summary=output is None,
        )
    failures.extend(run.failures)

    n_images = len(run.results)
    written = None
    if output is not None and out_fmt is not None and n_images == 0:
        typer.echo(f"nothing was read: {output} not written", err=True)
    elif output is not None and out_fmt is not None:
        written = _partial_path(output) if run.interrupted else output
        with one_line_errors(context=f"cannot write {written}"):
            failures.extend(write_outputs(run, written, out_fmt, coco_gt, coco_ids))

    typer.echo(f"{n_images} images, {run.num_faces} faces, {len(failures)} failed")
    for path, reason in failures:
        typer.echo(f"{path}: {reason}", err=True)
    if run.interrupted:
        done = f"after {n_images} of {len(items)} files"
        where = f"partial results written to {written} ({output} not written)" if written else "no results file written"
        typer.echo(f"interrupted {done}: {where}", err=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    if n_images == 0:
        raise typer.Exit(EXIT_USAGE)
    if failures:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``detect`` command to ``app``.

    Args:
        app: the root Typer app.
    """
    app.command("detect")(detect)
