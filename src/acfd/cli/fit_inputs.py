"""The inputs of the commands that fit something to a detector weights file on annotated images
(``acfd calibrate``, ``acfd train-verifier``), checked before the work, one line per problem."""

from __future__ import annotations

from pathlib import Path

import typer

from acfd.cli.errors import fail
from acfd.data.formats import ImageRecord, read_icartoon_csv, read_split


def check_detector_weights(weights: Path, needs: str) -> None:
    """Fail unless ``weights`` is an existing ``.safetensors`` file (``needs``: why it must be one)."""
    if weights.suffix != ".safetensors":
        fail(f"{weights}: {needs}")
    if not weights.is_file():
        fail(f"{weights}: weights file not found")


def read_annotated_images(gt: Path, images: Path, split: Path | None, purpose: str) -> tuple[dict[str, ImageRecord], list[str]]:
    """The ground truth of ``gt`` and the image names to use (those of ``split``, else all of
    ``gt``); the CSV's errors are echoed and the images skip them. ``purpose`` ends "no image to ..."."""
    if not images.is_dir():
        fail(f"{images}: image folder not found")
    records, problems = read_icartoon_csv(gt)
    for p in problems:
        if p.severity == "error":
            typer.echo(f"{p}", err=True)
    names = read_split(split) if split is not None else sorted(records)
    if not names:
        fail(f"{split or gt}: no image to {purpose}")
    return records, names
