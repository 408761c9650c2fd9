"""``acfd eval``: score a prediction CSV (or a model run on images) against iCartoonFace ground truth."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import typer

from acfd.cli.errors import CliError, check_device, check_not_inputs, check_output_file, one_line_errors
from acfd.cli.options import (
    Precision,
    PresetName,
    agreement_iou_option,
    calibration_option,
    check_named_model,
    detector_settings,
    flip_option,
    nms_thresh_option,
    precision_option,
    preset_option,
    scales_option,
    threads_option,
    verifier_max_boxes_option,
    verifier_option,
)
from acfd.data import formats
from acfd.data.formats import ImageRecord, Problem
from acfd.evaluation.errors import evaluate_errors
from acfd.evaluation.icartoonface import evaluate_breakdown
from acfd.evaluation.report import format_report, report_dict
from acfd.utils import atomic_write_text

logger = logging.getLogger(__name__)
_RUNNING = "When running a model: "


#: Problems of one file printed one per line; the rest are counted in one more line.
MAX_PROBLEM_LINES = 10


def _echo_problems(problems: Iterable[Problem]) -> list[str]:
    """Print warnings/errors as ``file:line: severity: message``, at most :data:`MAX_PROBLEM_LINES`
    per file and then one line counting the rest (info only in the debug log). Returns them all."""
    shown: list[str] = []
    per_file: dict[str, list[Problem]] = {}
    for p in problems:
        if p.severity == "info":
            logger.debug("%s", p)
            continue
        per_file.setdefault(p.file, []).append(p)
        shown.append(str(p))
    for file, found in per_file.items():
        for p in found[:MAX_PROBLEM_LINES]:
            typer.echo(str(p), err=True)
        if len(found) > MAX_PROBLEM_LINES:
            rest = found[MAX_PROBLEM_LINES:]
            errors = sum(p.severity == "error" for p in rest)
            typer.echo(f"{file}: ... and {len(rest)} more problems ({errors} errors, {len(rest) - errors} warnings)",
                       err=True)
    return shown


def _read_csv(path: Path, what: str) -> tuple[dict[str, ImageRecord], list[str]]:
    """Read a ground-truth or prediction CSV (predictions may also be ``acfd detect``'s JSON).

    Raises:
        CliError: predictions of which not one row could be used (the file is empty, or every row
            is malformed): one line with the count and the first problem, not one line per row.
    """
    if not path.is_file():
        raise CliError(f"{path}: {what} file not found")
    if what == "prediction" and path.suffix.lower() == ".json":
        records, problems = formats.read_detections_json(path)
    else:
        records, problems = formats.read_icartoon_csv(path)
    if what == "prediction" and not any(len(r) for r in records.values()):
        errors = [p for p in problems if p.severity == "error"]
        if errors:
            raise CliError(f"{path}: no usable prediction: all {len(errors)} rows are malformed (first: {errors[0]})")
        if not records:
            raise CliError(f"{path}: no predictions in the file (it is empty)")
    return records, _echo_problems(problems)


def _match_names(pred: dict[str, ImageRecord], gt: Mapping[str, ImageRecord]) -> dict[str, ImageRecord]:
    """Key predictions like the ground truth: ``sub/x.jpg`` (detect on a folder tree) -> ``x.jpg``."""
    out: dict[str, ImageRecord] = {}
    for key, rec in pred.items():
        name = key if key in gt else Path(key).name
        if name in out:  # two folders with the same file name: keep the first, say so
            logger.warning("%s and another prediction both map to %s; keeping the first", key, name)
            continue
        out[name] = ImageRecord(filename=name, boxes=rec.boxes, scores=rec.scores, width=rec.width, height=rec.height)
    return out


def _warn_suspicious(pred_path: Path, gt_path: Path, pred: Mapping[str, ImageRecord], gt: Mapping[str, ImageRecord]) -> list[str]:
    """Warnings for scores that mean nothing: no score column, or the ground truth itself."""
    warnings = []
    no_scores = any(r.scores is None for r in pred.values())
    if no_scores:
        warnings.append(
            f"{pred_path}: warning: no score column; every detection counts with the same score, "
            "so AP is not a ranking measure (use a submission CSV with scores)"
        )
    same_file = pred_path.resolve() == gt_path.resolve()
    same_boxes = bool(pred) and set(pred) == set(gt) and all(
        len(pred[k].boxes) == len(gt[k].boxes) and np.array_equal(pred[k].boxes, gt[k].boxes) for k in gt
    )
    if same_file or (same_boxes and no_scores):
        warnings.append(f"{pred_path}: warning: the predictions are the ground truth itself; the score says nothing")
    for w in warnings:
        typer.echo(w, err=True)
    return warnings


def _read_split(path: Path) -> set[str]:
    return {n for n in formats.read_split(path) if n}


def _find_images(images: Path, names: list[str]) -> tuple[dict[str, Path], list[str]]:
    """The ground-truth images under ``images`` (subfolders too, as acfd detect reads them), and one
    line saying how many are missing (their faces count as missed).

    Raises:
        CliError: none of them is there.
    """
    found = formats.find_images(images, names)
    missing = [n for n in names if n not in found]
    if missing and len(missing) == len(names):
        raise CliError(f"{images}: none of the {len(names)} ground-truth images is in this folder or its "
                       f"subfolders (e.g. {missing[0]}); check --images (or --split)")
    problems = []
    if missing:
        problems.append(f"{images}: warning: {len(missing)} of {len(names)} ground-truth images not found here "
                        f"or in subfolders (e.g. {missing[0]}); their faces count as missed")
        typer.echo(problems[0], err=True)
    return found, problems


def _run_detector(
    model: str,
    paths: dict[str, Path],
    weights: str | None,
    device: str,
    batch_size: int,
    settings: dict[str, Any],
    threads: int | None = None,
) -> tuple[dict[str, ImageRecord], list[str]]:
    """Run a :class:`~acfd.predict.detector.Detector` with ``settings`` (its preset and what changes
    it) on the image of each ground-truth name; per-image failures are reported."""
    from acfd.predict.detector import Detector  # loads torch: not needed to score a CSV

    problems: list[str] = []
    key_of = {str(p): name for name, p in paths.items()}
    try:
        # the evaluation preset by default: every box above the raw-score floor, all (calibrated)
        # scores kept; an interactive threshold would cut the precision-recall curve short
        det = Detector(model, weights=weights, device=device, threads=threads, **settings)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise CliError(f"cannot load model {model!r}: {exc}") from None
    logger.info("detecting faces on %d images with %s", len(paths), model)
    records: dict[str, ImageRecord] = {}
    for path, out in det.detect_paths(list(paths.values()), batch_size=batch_size):
        key = key_of.get(str(path), Path(path).name)
        if isinstance(out, Exception):
            msg = f"{path}: error: {out}"
            typer.echo(msg, err=True)
            problems.append(msg)
            continue
        boxes = np.asarray(out.boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(out.scores, dtype=np.float32).reshape(-1)
        # Scored as a submission CSV would be: per image, descending score (stable).
        order = np.argsort(-scores, kind="stable")
        records[key] = ImageRecord(filename=key, boxes=boxes[order], scores=scores[order])
    return records, problems


def _subset(records: Mapping[str, ImageRecord], keep: set[str]) -> dict[str, ImageRecord]:
    return {k: v for k, v in records.items() if k in keep}


def eval_command(
    pred: str | None = typer.Argument(
        None,
        metavar="PRED",
        help="Prediction CSV (filename,x1,y1,x2,y2,face,score), or a model name / checkpoint "
        "to run on --images.",
    ),
    gt: Path = typer.Option(..., "--gt", help="Ground-truth CSV (5 or 6 columns)."),
    split: Path | None = typer.Option(None, "--split", help="Only score the images listed in this file."),
    plot: Path | None = typer.Option(None, "--plot", help="Write the precision-recall curve (PNG)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write all metrics as JSON."),
    coco: bool = typer.Option(True, "--coco/--no-coco", help="Also compute COCO metrics."),
    model: str | None = typer.Option(
        None, "--model", help="Model name to run (then PRED may be its weights)."
    ),
    images: Path | None = typer.Option(
        None, "--images",
        help="Image folder: needed to run a model; with it, ground-truth boxes are clipped to their "
        "image and boxes entirely outside are removed (as acfd data check does).",
    ),
    weights: Path | None = typer.Option(None, "--weights", help="Checkpoint / safetensors for --model."),
    device: str = typer.Option("cpu", "--device", help="Device for the model: cpu, cuda, cuda:1..."),
    preset: PresetName = preset_option("evaluation"),
    scales: str | None = scales_option(_RUNNING),
    flip: bool | None = flip_option(_RUNNING),
    nms_thresh: float | None = nms_thresh_option(_RUNNING),
    agreement_iou: float | None = agreement_iou_option(_RUNNING),
    calibration: bool = calibration_option(_RUNNING),
    verifier: bool = verifier_option(_RUNNING),
    verifier_max_boxes: int | None = verifier_max_boxes_option(_RUNNING),
    batch_size: int = typer.Option(
        8, "--batch-size", min=1, help="Images per batch when running a model."
    ),
    threads: int | None = threads_option(),
    precision: Precision = precision_option(),
    save_csv: Path | None = typer.Option(
        None, "--save-csv", help="Write the model's detections as a submission CSV."
    ),
) -> None:
    """Score detections with the official iCartoonFace protocol (AP50), COCO metrics, a breakdown
    by face subset and where the AP50 is lost (localisation / duplicate / background / missed).

    PRED is a submission CSV, the JSON of ``acfd detect -o x.json``, or a model to run. Detections
    on images without ground truth are ignored; CSV problems are reported and the evaluation goes
    on. Outputs (--plot, --json, --save-csv) are checked before any work.
    """
    _eval(
        pred, gt, split, plot, json_out, coco, model, images, weights, device, scales, batch_size,
        save_csv, flip=flip, nms_thresh=nms_thresh, agreement_iou=agreement_iou, calibration=calibration,
        verifier=verifier, preset=preset.value, threads=threads, precision=precision.value,
        verifier_max_boxes=verifier_max_boxes,
    )


@one_line_errors
def _eval(
    pred: str | None,
    gt: Path,
    split: Path | None,
    plot: Path | None,
    json_out: Path | None,
    coco: bool,
    model: str | None,
    images: Path | None,
    weights: Path | None,
    device: str,
    scales: str | None,
    batch_size: int,
    save_csv: Path | None,
    flip: bool | None = None,
    nms_thresh: float | None = None,
    agreement_iou: float | None = None,
    calibration: bool = True,
    verifier: bool = True,
    preset: str = "evaluation",
    threads: int | None = None,
    precision: str = "auto",
    verifier_max_boxes: int | None = None,
) -> None:
    check_device(device)
    try:
        settings = detector_settings(preset, scales, None, flip, nms_thresh, agreement_iou, calibration, verifier,
                                     verifier_max_boxes)
        settings["precision"] = precision
    except typer.BadParameter as exc:
        raise CliError(f"--scales {scales!r}: {exc.message}") from None
    inputs = [p for p in (gt, split, Path(pred) if pred else None) if p is not None]
    for out, opt in ((plot, "--plot"), (json_out, "--json"), (save_csv, "--save-csv")):
        if out is not None:
            check_output_file(out, opt)
            check_not_inputs(out, inputs, opt)
    gt_records, gt_problems = _read_csv(gt, "ground-truth")
    if split is not None:
        if not split.is_file():
            raise CliError(f"{split}: split file not found")
        try:
            keep = _read_split(split)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        gt_records = _subset(gt_records, keep)
    found: dict[str, Path] = {}
    if images is not None and images.is_dir():
        found, missing = _find_images(images, list(gt_records))
        gt_problems += missing
        # One rule with `acfd data check`: ground-truth boxes are clipped to their image and
        # boxes entirely outside it are removed (the CSV alone has no image sizes to check).
        gt_problems += _echo_problems(formats.clip_to_image(gt_records, images, paths=found))
    num_faces = sum(len(r.boxes) for r in gt_records.values())
    if num_faces == 0:
        raise CliError(f"{gt}: no ground-truth face{' in the split' if split else ''}; nothing to score")

    use_model = model is not None or (pred is not None and not pred.lower().endswith((".csv", ".json")))
    pred_problems: list[str]
    if use_model:
        weights_arg = str(weights) if weights is not None else None
        if model is not None and pred is not None:
            if pred.lower().endswith(".csv"):
                raise CliError("give either a prediction CSV or --model, not both")
            if weights_arg is not None:
                raise CliError("with --model, give the weights either as PRED or with --weights, not both")
            weights_arg = pred
        model_name = model if model is not None else str(pred)
        if images is None:
            raise CliError(f"--images DIR is needed to run {model_name!r} (PRED is not a .csv / .json)")
        if not images.is_dir():
            raise CliError(f"{images}: image folder not found")
        check_named_model(model_name, weights_arg, "--model" if model is not None else "PRED")
        pred_records, pred_problems = _run_detector(model_name, found, weights_arg, device, batch_size, settings, threads)
        if save_csv is not None:
            formats.write_icartoon_csv(save_csv, pred_records, kind="submission")
            typer.echo(f"wrote {save_csv}")
        pred_source = model_name
    else:
        if pred is None:
            raise CliError("give a prediction CSV (PRED) or --model NAME with --images DIR")
        pred_records, pred_problems = _read_csv(Path(pred), "prediction")
        pred_records = _match_names(pred_records, gt_records)
        pred_problems += _warn_suspicious(Path(pred), gt, pred_records, gt_records)
        if split is not None:
            pred_records = _subset(pred_records, keep)
        pred_source = pred
        if save_csv is not None:
            logger.warning("--save-csv only applies when a model is run; ignored")

    outside = [k for k in pred_records if k not in gt_records]
    num_det = sum(len(r.boxes) for r in pred_records.values())
    typer.echo(f"ground truth: {gt} ({len(gt_records)} images, {num_faces} faces)")
    typer.echo(f"predictions: {pred_source} ({len(pred_records)} images, {num_det} detections)")
    if outside:
        typer.echo(f"{len(outside)} predicted images have no ground truth: their detections are ignored")
    unpredicted = [k for k in gt_records if k not in pred_records or not len(pred_records[k])]
    if not use_model and split is None and len(unpredicted) > len(gt_records) / 2:
        typer.echo(f"warning: {len(unpredicted)} of {len(gt_records)} ground-truth images have no prediction: their "
                   "faces count as missed; if the predictions are for part of the images, pass it with --split FILE",
                   err=True)

    breakdown = evaluate_breakdown(gt_records, pred_records)
    official = breakdown["all"]
    coco_res = None
    if coco:
        from acfd.evaluation.coco import coco_metrics  # run time: start-up stays light

        coco_res = coco_metrics(gt_records, pred_records)
    errors = evaluate_errors(gt_records, pred_records)
    for line in format_report(official, breakdown, coco_res, errors):
        typer.echo(line)

    if plot is not None:
        from acfd.evaluation.plots import plot_pr_curve  # run time: start-up stays light

        name = Path(pred_source).stem if not use_model else pred_source
        plot_pr_curve({name: official}, plot)
        typer.echo(f"wrote {plot}")
    if json_out is not None:
        meta: dict[str, Any] = {
            "pred": pred_source,
            "gt": str(gt),
            "split": None if split is None else str(split),
            "num_images": len(gt_records),
            "problems": {"gt": gt_problems, "pred": pred_problems},
        }
        data = report_dict(official, breakdown, coco_res, errors, **meta)
        atomic_write_text(json_out, json.dumps(data, indent=2) + "\n")
        typer.echo(f"wrote {json_out}")


def register(app: typer.Typer) -> None:
    """Add the ``eval`` command to ``app``."""
    app.command("eval")(eval_command)
