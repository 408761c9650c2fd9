"""``acfd recognize ...``: evaluate (identification + verification protocols), train, cut face crops."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from acfd.cli.errors import check_output_dir, check_output_file, fail, one_line_errors

recognize_app = typer.Typer(help="Cartoon face recognition: evaluate, train, cut crops.", no_args_is_help=True)


def load_embedder_option(weights: str | None, features: str = "model", device: str = "cpu"):  # noqa: ANN201
    """The embedder a command asked for: the raw-pixel baseline, given weights or the shipped model."""
    from acfd.recognition.embedder import PixelEmbedder, Recognizer

    if features == "pixels":
        return PixelEmbedder()
    if features != "model":
        fail(f"--features must be 'model' or 'pixels', got {features!r}", 2)
    return Recognizer(weights, device=device)


@recognize_app.command("eval")
@one_line_errors
def eval_command(
    root: Path = typer.Argument(..., help="Folder with one subfolder of face images per identity."),
    distractors: Path = typer.Option(None, "--distractors", help="Folder of face images of none of the identities."),
    weights: str = typer.Option(None, "--weights", "-w", help="Recognition weights (default: the shipped model)."),
    features: str = typer.Option("model", "--features", help="model, or pixels (the raw-pixel baseline)."),
    only: str = typer.Option(None, "--only", help="Comma-separated identities to evaluate (default: all)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the gallery choice and the verification pairs."),
    pairs: int = typer.Option(3000, "--pairs", help="Positive (and as many negative) verification pairs."),
    json_out: Path = typer.Option(None, "--json", help="Write every figure (CMC, ROC, folds) as JSON."),
    plots: Path = typer.Option(None, "--plots", help="Folder for cmc.png and roc.png."),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Identification (rank-k / CMC, with distractors) and 10-fold verification (accuracy, ROC/AUC)."""
    from acfd.recognition.data import list_images, load_crops, scan_identity_folder
    from acfd.recognition.train import evaluate_folder

    if json_out:
        check_output_file(json_out, "--json")
    if plots:
        check_output_dir(plots, "--plots")
    ids = scan_identity_folder(root, min_identities=2, min_images=2)
    if only:
        ids = ids.subset([n.strip() for n in only.split(",") if n.strip()])
    embedder = load_embedder_option(weights, features, device)
    dist = None
    failed: list[str] = []
    if distractors is not None:
        crops, _, failed = load_crops(list_images(distractors))
        if not crops:
            fail(f"{distractors}: no readable distractor images")
        dist = embedder.embed(crops)
    report = evaluate_folder(embedder, ids, dist, seed=seed, num_pairs=pairs)
    report.failed = failed + report.failed
    for line in report.failed:
        typer.echo(f"skipped {line}", err=True)
    if len(report.failed) and any(
        (report.identification.num_probes == 0, report.num_images < 2)
    ):
        fail(f"{root}: too few readable images")
    for line in report.summary_lines():
        typer.echo(line)
    if json_out:
        from acfd.utils import atomic_write_text

        atomic_write_text(json_out, json.dumps(report.to_dict(), indent=1))
    if plots:
        from acfd.recognition.plots import plot_curves

        for p in plot_curves(report, plots, label=embedder.model_id):
            typer.echo(f"wrote {p}")


@recognize_app.command("benchmark")
@one_line_errors
def benchmark_command(
    root: Path = typer.Argument(..., help="Folder with one subfolder of face images per identity (characters unseen in training)."),
    weights: list[str] = typer.Option(None, "--weights", "-w", help="Recognition weights to compare (repeatable; default: the shipped model)."),
    only: str = typer.Option(None, "--only", help="Comma-separated identities to use (default: all)."),
    distractors: Path = typer.Option(None, "--distractors", help="Faces of none of the identities, for the identification protocol."),
    shots: str = typer.Option("1,5,10", "--shots", help="References per character in the gallery (comma-separated)."),
    episodes: int = typer.Option(10, "--episodes", help="Seeded gallery draws per figure."),
    method: str = typer.Option("prototype", "--method", help="prototype (fitted gallery) or nearest (nearest neighbour)."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also the raw-pixel and colour-histogram baselines."),
    adapt: bool = typer.Option(False, "--adapt", help="Also each model adapted to the evaluated crops, as `acfd gallery adapt` does (acfd.recognition.adaptation)."),
    seed: int = typer.Option(0, "--seed"),
    json_out: Path = typer.Option(None, "--json", help="Write the table's figures as JSON."),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Few-shot naming (k references per character), open-set rejection and the papers' protocols, as a table.

    Columns: acc@k = closed-set accuracy with k references; reject95@k = outsiders called unknown
    at the threshold keeping 95 % of insiders named; named@k / unknown@k = insiders named
    correctly / outsiders called unknown at the gallery's calibrated threshold (one character
    left out of the gallery in turn); rank1 / auc / verif = identification (one image per
    character, with distractors) and 10-fold verification.
    """
    import dataclasses

    from acfd.recognition.adaptation import fit_show_adaptation
    from acfd.recognition.benchmark import baseline_features, format_table, run_benchmark
    from acfd.recognition.data import list_images, load_crops, scan_identity_folder
    from acfd.recognition.gallery_model import METHODS, fit_gallery_model

    if method not in METHODS:
        fail(f"--method must be one of {', '.join(METHODS)}, got {method!r}", 2)
    try:
        ks = [int(k) for k in shots.split(",") if k.strip()]
    except ValueError:
        fail(f"--shots must be comma-separated integers, got {shots!r}", 2)
    if not ks or min(ks) < 1:
        fail(f"--shots must be positive integers, got {shots!r}", 2)
    if json_out:
        check_output_file(json_out, "--json")
    ids = scan_identity_folder(root, min_identities=2, min_images=2)
    if only:
        ids = ids.subset([n.strip() for n in only.split(",") if n.strip()])
    crops, kept, failed = load_crops(ids.paths)
    for line in failed:
        typer.echo(f"skipped {line}", err=True)
    labels = ids.labels[kept]
    check_identity_counts(root, ids.identities, labels, 3)
    dist_crops = load_crops(list_images(distractors))[0] if distractors is not None else []

    def fit(ref, ref_labels, aug, threshold=0.5):  # noqa: ANN001, ANN202
        return fit_gallery_model(ref, ref_labels, aug, fallback_threshold=threshold, method=method)

    reports = []
    for w in weights or [None]:
        rec = load_embedder_option(w, "model", device)
        emb = rec.embed(crops)
        dist = rec.embed(dist_crops) if dist_crops else None
        reports.append(run_benchmark(
            rec.model_id, emb, labels, ks, episodes, seed,
            fit=lambda r, lab, aug, t=rec.unknown_threshold: fit(r, lab, aug, t), distractors=dist,
        ))
        if adapt:
            show = fit_show_adaptation(emb, seed=seed)
            show_threshold = rec.unknown_threshold if show.threshold is None else show.threshold
            reports.append(run_benchmark(
                f"{rec.model_id} adapted", show.apply(emb), labels, ks, episodes, seed,
                fit=lambda r, lab, aug, t=show_threshold: fit(r, lab, aug, t),
                distractors=None if dist is None else show.apply(dist),
            ))
    if baselines:
        dist_base = baseline_features(dist_crops) if dist_crops else {}
        for name, feats in baseline_features(crops).items():
            reports.append(run_benchmark(name, feats, labels, ks, episodes, seed, fit=fit, distractors=dist_base.get(name)))
    typer.echo(f"{len(ids.identities)} identities, {len(labels)} images, {len(dist_crops)} distractors, "
               f"gallery method {method}, {episodes} episodes")
    typer.echo(format_table(reports))
    if json_out:
        from acfd.utils import atomic_write_text

        atomic_write_text(json_out, json.dumps([dataclasses.asdict(r) for r in reports], indent=1))
    if failed:
        raise typer.Exit(1)


def check_identity_counts(root: Path, identities: list[str], labels: "Any", minimum: int) -> None:
    """Fail with one line naming every identity with fewer than ``minimum`` readable images."""
    import numpy as np

    counts = np.bincount(labels, minlength=len(identities))
    short = [f"{identities[i]} ({int(n)})" for i, n in enumerate(counts) if n < minimum]
    if short:
        fail(f"{root}: these identities have fewer than {minimum} readable images: {', '.join(short)}")


@recognize_app.command(
    "train", context_settings={"allow_extra_args": True, "ignore_unknown_options": False}
)
@one_line_errors
def train_command(
    overrides: list[str] = typer.Argument(None, help="Settings as key=value (e.g. head=arcface fusion=mtda)."),
    config: Path = typer.Option(None, "--config", "-c", help="Recipe (YAML), e.g. configs/recognition/base.yaml."),
    resume: str = typer.Option(None, "--resume", help="Checkpoint to continue, or 'auto'."),
    output: str = typer.Option(None, "--output", "-o", help="Run folder (overrides the config)."),
) -> None:
    """Train an embedding network (losses: softmax/sphereface/cosface/arcface; fusion: none/inter/intra/mtda)."""
    from acfd.recognition.train import load_recognition_config, train_recognition

    items = list(overrides or []) + ([f"output={output}"] if output else [])
    cfg = load_recognition_config(config, items)
    typer.echo(f"weights: {train_recognition(cfg, resume=resume)}")


@recognize_app.command("crops")
@one_line_errors
def crops_command(
    images: Path = typer.Argument(..., help="Image folder."),
    boxes_csv: Path = typer.Argument(..., help="iCartoonFace CSV of face boxes (filename,x1,y1,x2,y2[,...])."),
    out: Path = typer.Argument(..., help="Output folder for the crops (PNG)."),
    enlarge_rate: float = typer.Option(1.0, "--enlarge-rate", "-r", help="The papers' r: crop = (1 + r) x the face."),
    size: int = typer.Option(None, "--size", help="Crop side (default: the recognition input size)."),
    min_face: int = typer.Option(24, "--min-face", help="Skip faces smaller than this (pixels)."),
    split: Path = typer.Option(None, "--split", help="Only the images listed in this file (one name a line)."),
) -> None:
    """Cut face crops (enlarged rate, padded, resized) from ground-truth or detected boxes."""
    import cv2

    from acfd.data.formats import read_icartoon_csv
    from acfd.data.image_io import ImageReadError, load_image
    from acfd.recognition.crops import DEFAULT_INPUT_SIZE, crop_face
    from acfd.utils import atomic_path

    check_output_dir(out, "out")
    records, _ = read_icartoon_csv(boxes_csv)
    if split is not None:
        from acfd.data.formats import read_split

        wanted = set(read_split(split))
        records = {name: rec for name, rec in records.items() if name in wanted}
    written, failed = 0, 0
    for name, rec in sorted(records.items()):
        try:
            image = load_image(images / name)
        except ImageReadError as exc:
            typer.echo(f"skipped {exc}", err=True)
            failed += 1
            continue
        for j, box in enumerate(rec.boxes):
            if min(box[2] - box[0], box[3] - box[1]) < min_face:
                continue
            crop = crop_face(image, box, enlarge_rate, size or DEFAULT_INPUT_SIZE)
            with atomic_path(out / f"{Path(name).stem}_{j}.png") as tmp:
                ok, buf = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
                tmp.write_bytes(buf.tobytes())
            written += 1
    typer.echo(f"wrote {written} crops to {out}" + (f" ({failed} images failed)" if failed else ""))
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(recognize_app, name="recognize")
