"""``acfd calibrate``: fit a weights file's size-aware score calibration on annotated images.

Runs the model at one scale on the images of ``--gt`` (or of ``--split``), labels its boxes true /
false positive with the official matching, learns the precision of each (raw score, box size)
(``acfd.detection.calibration``) and writes a copy of the weights with the table in its metadata;
``Detector`` and ``acfd detect`` then report calibrated scores. Fit on training images, never on
the images you measure on.
"""

from __future__ import annotations

from pathlib import Path

import typer

from acfd.cli.errors import check_not_inputs, check_output_file, fail, one_line_errors, require_extra
from acfd.cli.fit_inputs import check_detector_weights, read_annotated_images


def register(app: typer.Typer) -> None:
    @app.command("calibrate")
    @one_line_errors
    def calibrate(
        weights: Path = typer.Argument(..., help="Trained weights (.safetensors) to calibrate."),
        gt: Path = typer.Option(..., "--gt", help="Ground-truth iCartoonFace CSV of the images to fit on."),
        images: Path = typer.Option(..., "--images", help="Folder of those images."),
        split: Path | None = typer.Option(None, "--split", help="Only the images listed in this file (e.g. train.txt)."),
        output: Path = typer.Option(..., "--output", "-o", help="Where to write the calibrated .safetensors (may be WEIGHTS itself)."),
        scale: str | None = typer.Option(None, "--scale", help="The test scale to fit at.",
                                         show_default="the first scale of the weights' interactive preset"),
        nms_thresh: float | None = typer.Option(None, "--nms-thresh", min=0.01, max=1.0, help="NMS IoU threshold.",
                                                show_default="the weights' interactive preset's"),
        batch_size: int = typer.Option(4, "--batch-size", min=1, help="Images per network call."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
    ) -> None:
        """Fit the score calibration of WEIGHTS on annotated images and write calibrated weights."""
        from acfd.engine.calibrate import calibrate_model, save_calibrated_weights  # run time: start-up stays light

        require_extra("train", "acfd calibrate")  # scikit-learn fits at the end: say so before the long pass
        check_detector_weights(weights, "a calibration is stored in a .safetensors weights file")
        if output.resolve() != weights.resolve():
            check_output_file(output)
            check_not_inputs(output, [p for p in (gt, split) if p is not None])
        records, names = read_annotated_images(gt, images, split, "fit on")
        try:
            fit = calibrate_model(weights, images, records, names, scale=scale, nms_thresh=nms_thresh,
                                  batch_size=batch_size, progress=progress,
                                  source=f"{split.name if split else gt.name} in {images}")
        except ValueError as exc:
            fail(f"{weights}: {exc}")
        for name, reason in fit.failed.items():
            typer.echo(f"{images / name}: {reason}", err=True)
        save_calibrated_weights(weights, fit.calibration, output)
        typer.echo(f"{output}: calibrated on {fit.num_detections} boxes ({fit.num_true_positives} on faces) of "
                   f"{len(names) - len(fit.failed)} images ({fit.calibration.fitted_on})")
        if fit.failed:
            raise typer.Exit(1)
