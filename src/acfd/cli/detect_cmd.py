"""``acfd detect``: find faces in images, folders, globs and videos.

The command checks its options and outputs, then hands the work to the batch runner
(:mod:`acfd.predict.batch`, or :mod:`acfd.predict.ray_engine` with ``--engine ray``). Every input
that cannot be read gets a one-line ``path: reason`` and the run goes on; the exit code is 0 when
everything was read, 1 when something failed, 2 when nothing could be read, 130 after Ctrl-C and
143 after SIGTERM. Outputs are checked before the work (writable, not overwriting an input, the
``--coco-gt`` file readable) and written atomically at the end; after Ctrl-C or SIGTERM (a job
scheduler's stop, ``kill``) the results so far go to ``<name>.partial<suffix>`` (never to the real
output name, so a partial submission cannot be taken for a finished one).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

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
from acfd.cli.options import (
    Precision,
    PresetName,
    agreement_iou_option,
    calibration_option,
    check_named_model,
    deprecated,
    deprecated_score_thr_option,
    detector_settings,
    flip_option,
    nms_thresh_option,
    precision_option,
    preset_option,
    scales_option,
    score_thresh_option,
    shipped_values,
    threads_option,
    verifier_max_boxes_option,
    verifier_option,
)

if TYPE_CHECKING:  # pragma: no cover
    from acfd.predict.batch import RunResult
    from acfd.predict.results import Detections
    from acfd.predict.sources import InputItem

logger = logging.getLogger(__name__)

#: Exit code after SIGTERM (128 + 15), as a shell reports a process it terminated.
EXIT_TERMINATED = 128 + signal.SIGTERM

#: Formats of ``-o``: the names of :class:`acfd.predict.batch.OutputFormat`, without loading torch for ``--help``.
FormatName = Enum("FormatName", {name: name for name in ("csv", "json", "coco")}, type=str)  # type: ignore[misc]


def check_not_inputs_any(outputs: list[Path], inputs: list[Path]) -> None:
    """:func:`~acfd.cli.errors.check_not_inputs` for many outputs (``--save-images`` copies)."""
    resolved = {p.resolve(): p for p in inputs}
    for out in outputs:
        if out.resolve() in resolved:
            check_not_inputs(out, [resolved[out.resolve()]], "--save-images")


def summary_lines(key: str, dets: Detections) -> list[str]:
    """``key: N faces`` and one ``  x1 y1 x2 y2  score`` line per face (pixels, descending score)."""
    n = len(dets)
    where = f" ({dets.timestamp:.2f} s)" if dets.timestamp is not None else ""
    lines = [f"{key}{where}: {n} face{'s' if n != 1 else ''}"]
    lines += [
        f"  {x1:7.1f} {y1:7.1f} {x2:7.1f} {y2:7.1f}  {s:.2f}" for (x1, y1, x2, y2), s in zip(dets.boxes.tolist(), dets.scores)
    ]
    return lines


def _echo_summary(key: str, dets: Detections) -> None:
    typer.echo("\n".join(summary_lines(key, dets)))


def _guess_format(out: Path, fmt: str | None) -> str:
    if fmt is not None:
        return fmt
    suffix = out.suffix.lower()
    if suffix in (".csv", ".json"):
        return suffix[1:]
    raise typer.BadParameter(
        f"cannot tell the format from {out.name!r}; use a .csv / .json name or --format",
        param_hint="'--format'",
    )


def detect(
    paths: list[str] = typer.Argument(..., help="Images, folders (recursive), globs or videos."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write all detections to this file (format from --format or the suffix)."
    ),
    fmt: FormatName | None = typer.Option(
        None, "--format", "-f", help="csv: iCartoonFace submission; json: per image; coco: results list."
    ),
    save_images: Path | None = typer.Option(
        None, "--save-images", help="Write each image with its boxes drawn into this folder (.jpg)."
    ),
    preset: PresetName = preset_option(),
    eval_mode: bool = typer.Option(
        False, "--eval",
        help="--preset evaluation: settings for AP and submissions (every box with a raw network score above "
        f"0.08, the paper's protocol; shipped model: --scales {shipped_values('scales', ('evaluation',))}, "
        "flip, NMS 0.45, agreement 0.75).",
    ),
    score_thresh: float | None = score_thresh_option(),
    score_thr: float | None = deprecated_score_thr_option(),
    scales: str | None = scales_option(),
    flip: bool | None = flip_option(),
    nms_thresh: float | None = nms_thresh_option(),
    agreement_iou: float | None = agreement_iou_option(),
    calibration: bool = calibration_option(),
    verifier: bool = verifier_option(),
    verifier_max_boxes: int | None = verifier_max_boxes_option(),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1..."),
    half: bool = typer.Option(False, "--half", help="float16 inference (CUDA only)."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Images per network call."),
    threads: int | None = threads_option(),
    precision: Precision = precision_option(),
    model: str | None = typer.Option(
        None,
        "--model",
        help="Model name (acfd-n: the shipped weights; others with --weights), a weights file, "
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
    input failed, 2 when nothing could be read, 130 after Ctrl-C, 143 after SIGTERM (both write the
    results so far to NAME.partial.SUFFIX).
    """
    try:
        _detect(paths, output, None if fmt is None else fmt.value, save_images, device=device, half=half, batch_size=batch_size,
                threads=threads, precision=precision.value, model=model,
                weights=weights, video_every=video_every, coco_gt=coco_gt, progress=progress, engine=engine,
                address=address, preset=preset.value, eval_mode=eval_mode,
                score_thresh=score_thresh, score_thr=score_thr,
                scales=scales, flip=flip, nms_thresh=nms_thresh, agreement_iou=agreement_iou,
                calibration=calibration, verifier=verifier, verifier_max_boxes=verifier_max_boxes)
    except KeyboardInterrupt:  # Ctrl-C before the run started (loading the model...)
        typer.echo("interrupted before any image was done: nothing was written", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


@one_line_errors
def _detect(
    paths: list[str],
    output: Path | None,
    fmt: str | None,
    save_images: Path | None,
    *,
    device: str,
    half: bool,
    batch_size: int,
    threads: int | None,
    precision: str,
    model: str | None,
    weights: Path | None,
    video_every: int,
    coco_gt: Path | None,
    progress: bool,
    engine: str,
    address: str | None,
    preset: str,
    eval_mode: bool,
    score_thresh: float | None,
    score_thr: float | None,
    scales: str | None,
    flip: bool | None,
    nms_thresh: float | None,
    agreement_iou: float | None,
    calibration: bool,
    verifier: bool,
    verifier_max_boxes: int | None = None,
) -> None:
    out_fmt = _guess_format(output, fmt) if output is not None else fmt
    if out_fmt is not None and output is None:
        raise typer.BadParameter("--format needs an output file (-o)", param_hint="'--format'")
    score_thresh = deprecated(score_thr, "--score-thr", score_thresh, "--score-thresh")
    if eval_mode and preset not in ("interactive", "evaluation"):
        raise typer.BadParameter(f"--eval is --preset evaluation; it cannot go with --preset {preset}", param_hint="'--eval'")
    settings = detector_settings("evaluation" if eval_mode else preset, scales, score_thresh, flip, nms_thresh,
                                 agreement_iou, calibration, verifier, verifier_max_boxes)
    check_device(device)
    check_named_model(model, weights)
    if engine not in ("local", "ray"):
        raise typer.BadParameter(f"unknown engine {engine!r}: local or ray", param_hint="'--engine'")
    if engine == "ray" and save_images is not None:
        fail("--save-images is not supported with --engine ray (draw the boxes from the -o results)", EXIT_USAGE)

    from acfd.predict.batch import (  # loads torch: after the option checks
        AnnotatedImages,
        OutputFormat,
        partial_path,
        write_outputs,
    )
    from acfd.predict.sources import collect_inputs

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
        if out_fmt != "coco":
            logger.warning("--coco-gt is only used with --format coco; ignored")
        else:
            from acfd.data.formats import coco_image_ids

            if not coco_gt.is_file():
                fail(f"--coco-gt {coco_gt}: ground-truth file not found")
            coco_ids = coco_image_ids(coco_gt)  # a bad file: one line naming it, before the work
    if save_images is not None:
        check_output_dir(save_images, "--save-images")
        check_not_inputs_any(AnnotatedImages(save_images).planned(items), [it.path for it in items])

    detector_kwargs: dict[str, Any] = dict(model=model, weights=weights, device=device, half=half,
                                           batch_size=batch_size, threads=threads, precision=precision, **settings)
    with _sigterm_ends_the_run() as terminated:
        run = _run(items, detector_kwargs, engine, address, batch_size, video_every, save_images, progress,
                   echo=output is None)
    failures.extend(run.failures)

    n_images = len(run.results)
    written = None
    if output is not None and out_fmt is not None and n_images == 0:
        typer.echo(f"nothing was read: {output} not written", err=True)
    elif output is not None and out_fmt is not None:
        written = partial_path(output) if run.interrupted else output
        with one_line_errors(context=f"cannot write {written}"):
            failures.extend(write_outputs(run, written, OutputFormat(out_fmt), coco_gt, coco_ids))

    typer.echo(f"{n_images} images, {run.num_faces} faces, {len(failures)} failed")
    for path, reason in failures:
        typer.echo(f"{path}: {reason}", err=True)
    if run.interrupted:
        done = f"after {n_images} of {len(items)} files"
        where = f"partial results written to {written} ({output} not written)" if written else "no results file written"
        typer.echo(f"{'terminated (SIGTERM)' if terminated else 'interrupted'} {done}: {where}", err=True)
        raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
    if n_images == 0:
        raise typer.Exit(EXIT_USAGE)
    if failures:
        raise typer.Exit(1)


@contextlib.contextmanager
def _sigterm_ends_the_run() -> Iterator[list[int]]:
    """Inside the block SIGTERM ends the run as Ctrl-C does (the batch runner keeps what was done);
    the list it yields gets the signal's number when one came."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield received
        return

    def stop(signum: int, frame: Any) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(items: list[InputItem], detector_kwargs: dict[str, Any], engine: str, address: str | None, batch_size: int,
         video_every: int, save_images: Path | None, progress: bool, echo: bool) -> RunResult:
    """The run on the chosen engine (the same :class:`~acfd.predict.batch.RunResult` from both)."""
    if engine == "ray":
        from acfd.predict.ray_engine import (
            run_detection_ray,  # the optional "ray" extra
        )

        with one_line_errors(context="Ray run failed", code=EXIT_USAGE):
            run = run_detection_ray(items, detector_kwargs, batch_size=batch_size, video_every=video_every,
                                    address=address, progress=progress)
        if echo:
            for key, dets in run.results:
                _echo_summary(key, dets)
        return run
    from acfd.predict.batch import run_detection  # run time: start-up stays light
    from acfd.predict.onnx_pipeline import open_pipeline

    with one_line_errors(context="cannot load the model", code=EXIT_USAGE):
        # the exported graphs when the settings allow (no torch import: seconds saved), else Detector
        detector = open_pipeline(**detector_kwargs)
        if detector is None:
            from acfd.predict.detector import Detector

            detector = Detector(**detector_kwargs)
    logger.debug("%r", detector)
    return run_detection(detector, items, batch_size=batch_size, video_every=video_every, save_dir=save_images,
                         progress=progress, on_result=_echo_summary if echo else None)


def register(app: typer.Typer) -> None:
    """Add the ``detect`` command to ``app``.

    Args:
        app: the root Typer app.
    """
    app.command("detect")(detect)
