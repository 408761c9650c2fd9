"""``acfd gallery add`` / ``acfd gallery list`` and ``acfd identify``: who are the faces in these images?

``identify`` detects faces (``acfd.Detector``; or takes boxes from an iCartoonFace CSV with
``--boxes``), crops them with the papers' enlarged rate, embeds them and searches the gallery;
the gallery is fitted to its own references (a prototype per character, an unknown threshold
calibrated on the references: :mod:`acfd.recognition.gallery_model`), and a face whose best
similarity is below that threshold (or ``--threshold``) is ``unknown``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from acfd.cli.errors import check_output_file, fail, one_line_errors

gallery_app = typer.Typer(help="Build and inspect galleries of known characters.", no_args_is_help=True)


def _embedder(weights: str | None, device: str):  # noqa: ANN202
    from acfd.cli.recognize_cmd import load_embedder_option

    return load_embedder_option(weights, "model", device)


def make_detector(device: str) -> Any:
    """The face detector used by ``identify`` (a function so tests can swap it)."""
    from acfd import Detector

    return Detector(device=device)


def _image_paths(target: Path) -> list[Path]:
    """The image files of ``target`` (a file or a folder, recursively); one-line error and exit 2
    when there are none or the target is a video (identify names faces in images)."""
    from acfd.data.image_io import is_image_file
    from acfd.recognition.data import list_images

    if not target.exists():
        fail(f"{target}: file not found", 2)
    if target.is_dir():
        paths = list_images(target)
        if not paths:
            fail(f"{target}: no images in this folder", 2)
        return paths
    if not is_image_file(target) and target.suffix.lower() in _VIDEO_SUFFIXES:
        fail(f"{target}: a video; identify takes images (extract frames first, e.g. acfd detect {target} "
             "--video-every 25 --save-images frames/)", 2)
    return [target]


_VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}


@gallery_app.command("add")
@one_line_errors
def add_command(
    name: str = typer.Argument(..., help="The character's name."),
    images: list[Path] = typer.Argument(..., help="Face crops of the character (files or folders)."),
    gallery: Path = typer.Option(..., "--gallery", "-g", help="Gallery file (created if missing)."),
    weights: str = typer.Option(None, "--weights", "-w", help="Recognition weights (default: the shipped model)."),
    replace: bool = typer.Option(False, "--replace", help="Drop the name's existing entries first."),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Add face images of NAME to a gallery (existing entries are kept unless --replace)."""
    from acfd.recognition.data import load_crops
    from acfd.recognition.gallery import Gallery

    check_output_file(gallery, "--gallery")
    rec = _embedder(weights, device)
    g = Gallery.load(gallery) if gallery.exists() else Gallery.create(gallery, rec.embedding_dim, rec.model_id)
    g.check_model(rec.model_id, rec.embedding_dim)  # refuse before any work
    paths = [p for target in images for p in _image_paths(target)]
    crops, _, failed = load_crops(paths)
    for line in failed:
        typer.echo(f"skipped {line}", err=True)
    if not crops:
        fail(f"no readable image for {name!r} (nothing written)")
    removed = g.remove(name) if replace else 0
    g.add([name] * len(crops), rec.embed(crops), model_id=rec.model_id)
    g.save()
    typer.echo(
        f"{gallery}: added {len(crops)} image(s) of {name}" + (f", replaced {removed}" if removed else "")
        + f"; {len(g)} entries, {len(g.identities)} identities"
    )
    if failed:
        raise typer.Exit(1)


@gallery_app.command("adapt")
@one_line_errors
def adapt_command(
    images: list[Path] = typer.Argument(..., help="Face crops of the show (files or folders; named or not)."),
    gallery: Path = typer.Option(..., "--gallery", "-g", help="Gallery file to adapt."),
    weights: str = typer.Option(None, "--weights", "-w", help="Recognition weights (the gallery's model)."),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Adapt a gallery to a show: a transform fitted on the show's face crops (their mean removed,
    then the directions in which similar faces differ shrunk) is applied before comparing, which
    spreads the show's characters apart. Give a few hundred crops (e.g. those of `acfd assemble`,
    or `acfd recognize crops` of some episodes); with under 80 only the mean is removed."""
    from acfd.recognition.data import load_crops
    from acfd.recognition.gallery import Gallery

    g = Gallery.load(gallery)
    rec = _embedder(weights, device)
    g.check_model(rec.model_id, rec.embedding_dim)
    paths = [p for target in images for p in _image_paths(target)]
    crops, _, failed = load_crops(paths)
    for line in failed:
        typer.echo(f"skipped {line}", err=True)
    g.adapt(rec.embed(crops), model_id=rec.model_id)
    g.save()
    how = "mean removed, within-cluster normalisation" if g.adaptation is not None and g.adaptation.projection is not None else "mean removed"
    typer.echo(f"{gallery}: adapted to {len(crops)} face crop(s) of the show ({how})")
    if failed:
        raise typer.Exit(1)


@gallery_app.command("list")
@one_line_errors
def list_command(
    gallery_arg: Path = typer.Argument(None, metavar="GALLERY", help="Gallery file."),
    gallery: Path = typer.Option(None, "--gallery", "-g", help="Gallery file (as for add and identify)."),
) -> None:
    """Names in a gallery with their number of images, the model it was built with, and the
    unknown threshold calibrated on its references."""
    from collections import Counter

    from acfd.recognition.gallery import Gallery

    path = gallery or gallery_arg
    if path is None:
        fail("give the gallery file (acfd gallery list GALLERY, or --gallery GALLERY)", 2)
    g = Gallery.load(path)
    typer.echo(f"model {g.model_id}, {g.dim}-d, {len(g)} entries" + (", adapted to a show" if g.adaptation is not None else ""))
    if len(g):
        model = g.fit(fallback_threshold=float("nan"))
        how = "calibrated on the references" if model.calibrated else "the model's (one reference per name)"
        if model.calibrated:
            typer.echo(f"unknown threshold {model.threshold:.3f} ({how})")
        else:
            typer.echo(f"unknown threshold: {how}")
    for n, count in sorted(Counter(g.names).items()):
        typer.echo(f"{n}\t{count}")


def identify_command(
    target: Path = typer.Argument(..., help="An image or a folder of images."),
    gallery: Path = typer.Option(..., "--gallery", "-g", help="Gallery built with `acfd gallery add`."),
    weights: str = typer.Option(None, "--weights", "-w", help="Recognition weights (must be the gallery's model)."),
    threshold: float = typer.Option(
        None, "--threshold", help="Below this similarity: unknown (default: calibrated on the gallery's references)."
    ),
    boxes: Path = typer.Option(None, "--boxes", help="Use these face boxes (iCartoonFace CSV) instead of the detector."),
    enlarge_rate: float = typer.Option(None, "--enlarge-rate", "-r", help="Crop enlarged rate (default: the model's)."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the results as JSON."),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Detect, crop, embed and name every face: prints `file x1,y1,x2,y2 name similarity`."""
    from acfd.data.image_io import ImageReadError, load_image
    from acfd.recognition.crops import crop_face
    from acfd.recognition.gallery import Gallery
    from acfd.recognition.identify import Identifier

    if out:
        check_output_file(out, "--out")
    paths = _image_paths(target)
    g = Gallery.load(gallery)
    if len(g) == 0:
        fail(f"{gallery}: the gallery is empty (add faces with `acfd gallery add`)")
    rec = _embedder(weights, device)
    identifier = Identifier(rec, g, threshold)
    thr = identifier.threshold
    rate = rec.enlarge_rate if enlarge_rate is None else enlarge_rate
    known_boxes = None
    if boxes is not None:
        from acfd.data.formats import read_icartoon_csv

        known_boxes, _ = read_icartoon_csv(boxes)
    detector = make_detector(device) if known_boxes is None else None
    results: list[dict[str, Any]] = []
    failed = 0
    for path in paths:
        try:
            image = load_image(path)
        except ImageReadError as exc:
            typer.echo(f"skipped {exc}", err=True)
            failed += 1
            continue
        if known_boxes is not None:
            rec_boxes = known_boxes.get(path.name)
            face_boxes = [] if rec_boxes is None else [list(map(float, b)) for b in rec_boxes.boxes]
        else:
            face_boxes = [list(map(float, b)) for b in detector(image).boxes]
        crops = [crop_face(image, b, rate, rec.input_size) for b in face_boxes]
        for box, face in zip(face_boxes, identifier.identify_crops(crops)):
            name = face.identity or "unknown"
            results.append({"file": str(path), "box": [round(v, 1) for v in box], "name": name,
                            "best_match": face.best_match, "similarity": round(face.similarity, 4)})
            typer.echo(f"{path} {','.join(f'{v:.0f}' for v in box)} {name} {face.similarity:.3f}")
        if not face_boxes:
            typer.echo(f"{path} no face found", err=True)
    if out:
        from acfd.utils import atomic_write_text

        atomic_write_text(out, json.dumps({"gallery": str(gallery), "model": rec.model_id, "threshold": thr,
                                           "faces": results}, indent=1))
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(gallery_app, name="gallery")
    app.command("identify")(one_line_errors(identify_command))
