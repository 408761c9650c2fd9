"""``acfd assemble SOURCES -o PROJECT_DIR`` (the semi-automatic assembling pipeline) and
``acfd assemble export PROJECT_DIR [-o OUT]`` (the dataset, at any point of the review)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import typer

from acfd.cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, CliError, check_output_dir, fail, one_line_errors

logger = logging.getLogger(__name__)


def _export(args: list[str], output: Path | None) -> None:
    from acfd.assemble.export import IMAGES, export_project, export_target
    from acfd.assemble.project import Project

    if len(args) != 1:
        fail("usage: acfd assemble export PROJECT_DIR [-o OUT]", 2)
    with Project(args[0]) as project:
        target = export_target(project, output)  # refused before any work: see export_target
        check_output_dir(target, "-o")
        try:
            summary = export_project(project, target)
        except KeyboardInterrupt:
            typer.echo(f"interrupted: nothing was exported ({target} is as it was)", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
    shown = output if output is not None else target
    typer.echo(
        f"{shown}: {summary['confirmed']} confirmed crops of {summary['identities']} identities, "
        f"{summary['unreviewed']} unreviewed, {summary['not_face']} not faces; "
        f"{summary['boxes']} boxes on {summary['images_with_boxes']} images in {IMAGES}/ "
        "(boxes.csv, boxes_coco.json, manifest.json)"
    )
    if summary["images_missing"]:
        typer.echo(
            f"error: {summary['images_missing']} image(s) with boxes could not be copied, their boxes are left "
            f"out (first: {summary['first_missing']}; all in manifest.json images_missing)",
            err=True,
        )
        raise typer.Exit(EXIT_ERROR)


@contextlib.contextmanager
def _resume_note(project_dir: Path) -> Iterator[None]:
    """On Ctrl-C: one line saying what is kept and how to resume, and exit 130."""
    from acfd.assemble.db import DB_NAME

    try:
        yield
    except KeyboardInterrupt:
        typer.echo(
            f"interrupted: the work done so far is saved in {project_dir / DB_NAME}; "
            "run the same command again to resume where it stopped",
            err=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _make_embedder(features: str, recognizer_weights: Path | None, device: str):  # noqa: ANN202
    from acfd.recognition import PixelEmbedder, Recognizer

    if features == "pixels":
        return PixelEmbedder()
    if features != "model":
        raise CliError(f"--features must be 'model' or 'pixels', got {features!r}", 2)
    return Recognizer(weights=recognizer_weights, device=device)


@one_line_errors
def assemble(
    args: list[str] = typer.Argument(
        ..., metavar="SOURCES...", help="Image folders, images, globs and videos; or 'export PROJECT_DIR'."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="The project folder (created; a re-run resumes it). For 'export': the dataset folder."
    ),
    references: Path | None = typer.Option(
        None, "--references", help="Reference set: a folder with one subfolder of typical face images per character."
    ),
    gallery: Path | None = typer.Option(None, "--gallery", help="A recognition gallery file (acfd gallery add) as the reference set."),
    boxes: Path | None = typer.Option(None, "--boxes", help="Take face boxes from this iCartoonFace CSV instead of the detector."),
    every_seconds: float | None = typer.Option(None, "--every-seconds", min=0.001, help="Video: one frame every N seconds.", show_default="1 (the papers)"),
    every_frames: int | None = typer.Option(None, "--every-frames", min=1, help="Video: one frame every N frames (instead of seconds)."),
    score_thr: float | None = typer.Option(None, "--score-thr", min=0.0, max=1.0, help="Keep detections above this.", show_default="0.5"),
    enlarge_rate: float | None = typer.Option(None, "--enlarge-rate", min=0.0, help="Crop (1 + r) x the face.", show_default="1.0 (the papers)"),
    min_resolution: int | None = typer.Option(None, "--min-resolution", min=0, help="Drop crops smaller than this (pixels).", show_default="100 (the papers)"),
    blur_thr: float | None = typer.Option(None, "--blur-thr", min=0.0, help="Drop crops whose Laplacian variance (at 256x256) is below this.", show_default="30 (the papers)"),
    dup_sim: float | None = typer.Option(None, "--dup-sim", min=-1.0, max=1.0, help="Near-duplicates above this cosine.", show_default="the recognition model's, else 0.95 (the papers)"),
    candidate_sim: float | None = typer.Option(None, "--candidate-sim", min=-1.0, max=1.0, help="Candidate character above this cosine to its prototype.", show_default="the recognition model's, else calibrated on the references"),
    cluster_sim: float | None = typer.Option(None, "--cluster-sim", min=-1.0, max=1.0, help="Cluster leader similarity.", show_default="the recognition model's, else 0.5"),
    model: str | None = typer.Option(None, "--model", help="Detector: a model name or weights file.", show_default="the shipped model"),
    weights: Path | None = typer.Option(None, "--weights", help="Detector weights for --model."),
    scales: str | None = typer.Option(None, "--scales", help="Detector test scales (as acfd detect).", show_default="640"),
    features: str = typer.Option("model", "--features", help="Embeddings: 'model' (the recognition model) or 'pixels' (raw-pixel baseline)."),
    recognizer_weights: Path | None = typer.Option(None, "--recognizer-weights", help="Recognition weights.", show_default="the shipped model"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1..."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Frames per detector call."),
    engine: str = typer.Option("local", "--engine", help="Detect stage: local (this process) or ray (Ray Data actors; pip install 'acfd[ray]')."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster to join with --engine ray (auto, ray://host:10001).", show_default="a local Ray"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr."),
) -> None:
    """Turn episodes and image folders into a cartoon-face dataset to review (iCartoonFace's pipeline).

    Stages: sample frames, detect, crop (drop small and blurred), embed, remove near-duplicates,
    candidate identities from --references / --gallery, cluster the rest. Each prints its counts;
    a re-run skips finished work and resumes a killed run. Then: acfd annotate PROJECT_DIR, and
    acfd assemble export PROJECT_DIR [-o OUT].
    """
    if args and args[0] == "export":
        _export(args[1:], output)
        return
    from acfd.assemble.config import AssembleConfig
    from acfd.assemble.pipeline import run_pipeline
    from acfd.assemble.project import Project
    from acfd.assemble.stages import RayDetection, boxes_finder, detector_finder

    if output is None:
        fail("give the project folder with -o PROJECT_DIR", 2)
    if every_seconds is not None and every_frames is not None:
        fail("give --every-seconds or --every-frames, not both", 2)
    if engine not in ("local", "ray"):
        fail(f"--engine must be 'local' or 'ray', got {engine!r}", 2)
    if engine == "ray" and boxes is not None:
        fail("--engine ray runs the detector; with --boxes there is nothing to detect", 2)
    if engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            fail("--engine ray needs Ray: pip install 'acfd[ray]'", 2)
    check_output_dir(output, "-o")
    explicit = {
        "every_seconds": every_seconds, "every_frames": every_frames, "score_thr": score_thr,
        "enlarge_rate": enlarge_rate, "min_resolution": min_resolution, "blur_thr": blur_thr,
        "dup_sim": dup_sim, "candidate_sim": candidate_sim, "cluster_sim": cluster_sim,
    }
    explicit = {k: v for k, v in explicit.items() if v is not None}
    if every_frames is not None:
        explicit["every_seconds"] = None  # sample by frames
    with _resume_note(output), Project(output, create=True) as project:
        cfg = project.settle_config(AssembleConfig().merged(explicit), explicit)
        if boxes is not None:
            finder = boxes_finder(boxes)
        elif engine == "ray":  # each actor loads the detector itself
            finder = RayDetection(
                dict(model=model, weights=weights, device=device, scales=scales, score_thresh=cfg.score_thr), address
            )
        else:
            from acfd.predict.detector import Detector

            with one_line_errors(context="cannot load the detector"):
                finder = detector_finder(
                    Detector(model=model, weights=weights, device=device, scales=scales, score_thresh=cfg.score_thr)
                )
        with one_line_errors(context="cannot load the recognition model"):
            embedder = _make_embedder(features, recognizer_weights, device)
        reports = run_pipeline(
            project, args, cfg, finder, embedder, references=references, gallery=gallery,
            batch_size=batch_size, progress=progress,
        )
        for r in reports:
            typer.echo(r.line())
        failed = project.db.query("SELECT key, error FROM sources WHERE status = 'failed'")
        failed += project.db.query("SELECT key, error FROM frames WHERE error IS NOT NULL")
    for row in failed:
        typer.echo(f"{row['key']}: {row['error']}", err=True)
    typer.echo(f"next: acfd annotate {output}   then: acfd assemble export {output}")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``assemble`` command to ``app``."""
    app.command("assemble")(assemble)
