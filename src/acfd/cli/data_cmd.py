"""``acfd data ...``: convert, check, describe and preview annotation sets."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import typer

from acfd.cli.errors import check_not_inputs, check_output_dir, check_output_file, fail, one_line_errors
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
    return read_annotations(path, fmt, images_dir=images)  # ValueError: one line (one_line_errors)


def _check_output(dst: Path, fmt: str | None, src: Path) -> None:
    """``dst`` writable (a folder for yolo / voc, else a file) and not the input."""
    from acfd.data.formats import guess_format, normalize_format  # run time: start-up stays light

    kind = normalize_format(fmt) if fmt else guess_format(dst)
    if kind in ("yolo", "voc"):
        check_output_dir(dst, "DST")
    else:
        check_output_file(dst, "DST")
        check_not_inputs(dst, [src], "DST")


@data_app.command("convert")
@one_line_errors
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
    if clip and images is None:
        fail("--clip needs --images")
    _check_output(dst, dst_fmt, src)
    records, problems = _read(src, src_fmt, images)
    if clip:
        problems += clip_to_image(records, images)
    _echo_problems(problems, show_info=False)
    write_annotations(dst, records, dst_fmt, images_dir=images)
    n_boxes = sum(len(r) for r in records.values())
    errors = _count(problems, "error")
    typer.echo(f"wrote {n_boxes} boxes on {len(records)} images to {dst} ({errors} errors, "
               f"{_count(problems, 'warning')} warnings while reading)")
    if strict and errors:
        raise typer.Exit(1)


@data_app.command("check")
@one_line_errors
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
    from acfd.data.check import run_check  # run time: start-up stays light

    result = run_check(annotations, images, split=split, fmt=fmt, decode=decode)
    _echo_problems(result.problems)
    typer.echo(result.summary())
    if not result.ok:
        raise typer.Exit(1)


@data_app.command("stats")
@one_line_errors
def stats_command(
    annotations: Path = typer.Argument(..., help="Annotation file or folder."),
    out: Path = typer.Option(..., "--out", help="Folder for the PNG plots and stats.json."),
    images: Path | None = typer.Option(
        None, "--images", help="Image folder (image sizes for relative face size; needed for yolo)."
    ),
    fmt: str | None = typer.Option(None, "--format", help=_FMT_HELP),
) -> None:
    """Plot dataset statistics (faces per image, face size, aspect ratio) and print the numbers."""
    from acfd.data.formats import fill_image_sizes  # run time: start-up stays light
    from acfd.data.stats import ASPECT_HIGH, ASPECT_LOW, dataset_stats, plot_stats

    check_output_dir(out, "--out")
    records, problems = _read(annotations, fmt, images)
    if images is not None:
        problems += fill_image_sizes(records, images)
    _echo_problems(problems, show_info=False)
    if not any(len(r) for r in records.values()):
        fail(f"{annotations}: no annotated face; nothing to plot")
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
@one_line_errors
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
    from acfd.data.preview import save_preview  # run time: start-up stays light

    check_output_file(out, "--out")
    check_not_inputs(out, [annotations], "--out")
    path = save_preview(images, annotations, out, n=n, seed=seed, size=size, split=split)
    typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the root app.

    Args:
        app: the root Typer app.
    """
    app.add_typer(data_app, name="data")
