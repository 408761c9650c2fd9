"""``acfd gallery add`` / ``acfd gallery list`` and ``acfd identify``: who are the faces in these images?

``identify`` detects faces (``acfd.Detector``; or takes boxes from an iCartoonFace CSV with
``--boxes``), crops them with the papers' enlarged rate, embeds them and searches the gallery;
a face whose best similarity is below the threshold (chosen on the dev identities and stored in the
recognition weights, or ``--threshold``) is ``unknown``.
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
    from acfd.recognition.data import list_images

    if target.is_dir():
        return list_images(target)
    if not target.exists():
        fail(f"{target}: file not found")
    return [target]


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


@gallery_app.command("list")
@one_line_errors
def list_command(gallery: Path = typer.Argument(..., help="Gallery file.")) -> None:
    """Names in a gallery with their number of images, and the model it was built with."""
    from collections import Counter

    from acfd.recognition.gallery import Gallery

    g = Gallery.load(gallery)
    typer.echo(f"model {g.model_id}, {g.dim}-d, {len(g)} entries")
    for n, count in sorted(Counter(g.names).items()):
        typer.echo(f"{n}\t{count}")


def identify_command(
    target: Path = typer.Argument(..., help="An image or a folder of images."),
    gallery: Path = typer.Option(..., "--gallery", "-g", help="Gallery built with `acfd gallery add`."),
    weights: str = typer.Option(None, "--weights", "-w", help="Recognition weights (must be the gallery's model)."),
    threshold: float = typer.Option(None, "--threshold", help="Below this similarity: unknown (default: the model's)."),
    boxes: Path = typer.Option(None, "--boxes", help="Use these face boxes (iCartoonFace CSV) instead of the detector."),
    enlarge_rate: float = typer.Option(None, "--enlarge-rate", "-r", help="Crop enlarged rate (default: the model's)."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the results as JSON."),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Detect, crop, embed and name every face: prints `file x1,y1,x2,y2 name similarity`."""
    from acfd.data.image_io import ImageReadError, load_image
    from acfd.recognition.crops import crop_face
    from acfd.recognition.gallery import Gallery

    if out:
        check_output_file(out, "--out")
    g = Gallery.load(gallery)
    if len(g) == 0:
        fail(f"{gallery}: the gallery is empty (add faces with `acfd gallery add`)")
    rec = _embedder(weights, device)
    g.check_model(rec.model_id, rec.embedding_dim)
    thr = rec.unknown_threshold if threshold is None else threshold
    rate = rec.enlarge_rate if enlarge_rate is None else enlarge_rate
    known_boxes = None
    if boxes is not None:
        from acfd.data.formats import read_icartoon_csv

        known_boxes, _ = read_icartoon_csv(boxes)
    detector = make_detector(device) if known_boxes is None else None
    results: list[dict[str, Any]] = []
    failed = 0
    for path in _image_paths(target):
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
        hits = g.search(rec.embed(crops), k=1, model_id=rec.model_id) if crops else []
        for box, hit in zip(face_boxes, hits):
            best, sim = hit[0]
            name = best if sim >= thr else "unknown"
            results.append({"file": str(path), "box": [round(v, 1) for v in box], "name": name,
                            "best_match": best, "similarity": round(sim, 4)})
            typer.echo(f"{path} {','.join(f'{v:.0f}' for v in box)} {name} {sim:.3f}")
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
