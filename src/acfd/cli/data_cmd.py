"""``acfd data ...``: convert, check, describe and preview annotation sets."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import typer

from acfd.data.formats import (
    FORMATS,
    ImageRecord,
    Problem,
    clip_to_image,
    read_annotations,
    write_annotations,
)
from acfd.utils import atomic_write_text

logger = logging.getLogger(__name__)

data_app = typer.Typer(
    help="Annotation tools: convert formats, check a dataset, plot statistics, preview boxes.",
    no_args_is_help=True,
)

_FMT_HELP = f"Annotation format: {', '.join(FORMATS)} (guessed from the path when omitted)."


def _fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr and return the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _echo_problems(problems: Iterable[Problem], show_info: bool = True) -> None:
    for p in problems:
        if p.severity == "info" and not show_info:
            logger.debug("%s", p)
            continue
        typer.echo(str(p), err=p.severity != "info")


def _count(problems: Iterable[Problem], severity: str) -> int:
    return sum(1 for p in problems if p.severity == severity)


def _read(
    path: Path, fmt: str | None, images: Path | None
) -> tuple[dict[str, ImageRecord], list[Problem]]:
    try:
        return read_annotations(path, fmt, images_dir=images)
    except ValueError as exc:  # AnnotationError, unknown format, yolo without images
        raise _fail(str(exc)) from exc


@data_app.command("convert")
def convert_command(
    src: Path = typer.Argument(..., help="Annotation file or folder to read."),
    dst: Path = typer.Argument(..., help="Annotation file or folder to write."),
    src_fmt: str | None = typer.Option(None, "--from", help=_FMT_HELP),
    dst_fmt: str | None = typer.Option(None, "--to", help=_FMT_HELP),
    images: Path | None = typer.Option(
        None, "--images", help="Image folder: image sizes for coco / yolo, and for --clip."
    ),
    clip: bool = typer.Option(False, "--clip", help="Clip boxes to their images (needs --images)."),
    strict: bool = typer.Option(False, "--strict", help="Exit with code 1 if any row was dropped."),
) -> None:
    """Convert annotations between iCartoonFace CSV, COCO JSON, YOLO txt and Pascal VOC XML."""
    records, problems = _read(src, src_fmt, images)
    if clip:
        if images is None:
            raise _fail("--clip needs --images")
        problems += clip_to_image(records, images)
    _echo_problems(problems, show_info=False)
    try:
        write_annotations(dst, records, dst_fmt, images_dir=images)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    n_boxes = sum(len(r) for r in records.values())
    errors = _count(problems, "error")
    typer.echo(f"wrote {n_boxes} boxes on {len(records)} images to {dst} ({errors} errors, "
               f"{_count(problems, 'warning')} warnings while reading)")
    if strict and errors:
        raise typer.Exit(1)


@data_app.command("check")
def check_command(
    annotations: Path = typer.Argument(..., help="Annotation file or folder."),
    images: Path = typer.Option(..., "--images", help="Image folder the annotations refer to."),
    split: Path | None = typer.Option(None, "--split", help="Split file (one image name per line)."),
    fmt: str | None = typer.Option(None, "--format", help=_FMT_HELP),
    decode: bool = typer.Option(
        False, "--decode", help="Decode every image fully (finds truncated files; slower)."
    ),
) -> None:
    """Check a dataset; print each problem as ``file:line: severity: message``; exit 1 on errors."""
    from acfd.data.check import run_check

    result = run_check(annotations, images, split=split, fmt=fmt, decode=decode)
    _echo_problems(result.problems)
    typer.echo(result.summary())
    if not result.ok:
        raise typer.Exit(1)


@data_app.command("stats")
def stats_command(
    annotations: Path = typer.Argument(..., help="Annotation file or folder."),
    out: Path = typer.Option(..., "--out", help="Folder for the PNG plots and stats.json."),
    images: Path | None = typer.Option(
        None, "--images", help="Image folder (image sizes for relative face size; needed for yolo)."
    ),
    fmt: str | None = typer.Option(None, "--format", help=_FMT_HELP),
) -> None:
    """Plot dataset statistics (faces per image, face size, aspect ratio) and print the numbers."""
    from acfd.data.formats import fill_image_sizes
    from acfd.data.stats import ASPECT_HIGH, ASPECT_LOW, dataset_stats, plot_stats

    records, problems = _read(annotations, fmt, images)
    if images is not None:
        problems += fill_image_sizes(records, images)
    _echo_problems(problems, show_info=False)
    stats = dataset_stats(records)
    files = plot_stats(records, out)
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=2) + "\n")
    ar = stats["aspect_ratio"]
    size = stats["face_size"]
    typer.echo(f"images: {stats['num_images']} ({stats['num_images_with_faces']} with faces)")
    typer.echo(f"faces: {stats['num_faces']} ({stats['faces_per_image']['mean']:.2f} per image, "
               f"max {stats['faces_per_image']['max']})")
    if size:
        typer.echo(f"face size sqrt(w*h): median {size['median']:.1f} px, "
                   f"5-95% {size['p5']:.1f}-{size['p95']:.1f} px")
        typer.echo(f"aspect h/w: median {ar['median']:.2f}, "
                   f"< {ASPECT_LOW:g}: {100 * ar[f'frac_below_{ASPECT_LOW:g}']:.1f}%, "
                   f"> {ASPECT_HIGH:g}: {100 * ar[f'frac_above_{ASPECT_HIGH:g}']:.1f}%")
    for f in [*files, out / "stats.json"]:
        typer.echo(f"wrote {f}")


@data_app.command("preview")
def preview_command(
    annotations: Path = typer.Argument(..., help="Annotation file (iCartoonFace CSV...)."),
    images: Path = typer.Option(..., "--images", help="Image folder."),
    out: Path = typer.Option(..., "--out", help="Output PNG (a grid of images with their boxes)."),
    n: int = typer.Option(16, "--n", min=1, help="Number of images."),
    seed: int = typer.Option(0, "--seed", help="Random seed for picking the images."),
    size: int = typer.Option(640, "--size", min=16, help="Tile size in pixels."),
    split: Path | None = typer.Option(None, "--split", help="Only pick images from this split file."),
) -> None:
    """Draw the boxes of a few random images into one PNG grid."""
    try:
        from acfd.data.preview import save_preview
    except ImportError as exc:
        raise _fail(f"preview is not available ({exc})") from exc
    try:
        path = save_preview(images, annotations, out, n=n, seed=seed, size=size, split=split)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the root app.

    Args:
        app: the root Typer app.
    """
    app.add_typer(data_app, name="data")
