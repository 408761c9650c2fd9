"""``acfd train-verifier``: train a weights file's second-stage face verifier on annotated images.

Runs the detector at one scale on the images of ``--gt`` (or of ``--split``), crops every box and
face, fits how the verifier's score combines with the detector's on a held-out fifth of the images,
trains the verifier on all of them and writes it (``acfd.detection.verifier``). Written as
``NAME-verifier.safetensors`` beside ``NAME.safetensors``, ``Detector`` and ``acfd detect`` use it
by themselves. Fit on training images, never on the images you measure on.
"""

from __future__ import annotations

from pathlib import Path

import typer

from acfd.cli.errors import check_not_inputs, check_output_file, fail, one_line_errors, require_extra
from acfd.cli.fit_inputs import check_detector_weights, read_annotated_images


def register(app: typer.Typer) -> None:
    @app.command("train-verifier")
    @one_line_errors
    def train_verifier(
        weights: Path = typer.Argument(..., help="Trained detector weights (.safetensors)."),
        gt: Path = typer.Option(..., "--gt", help="Ground-truth iCartoonFace CSV of the images to train on."),
        images: Path = typer.Option(..., "--images", help="Folder of those images."),
        split: Path | None = typer.Option(None, "--split", help="Only the images listed in this file (e.g. train.txt)."),
        output: Path | None = typer.Option(None, "--output", "-o",
                                           help="Where to write the verifier (default: WEIGHTS' NAME-verifier.safetensors)."),
        variant: str = typer.Option("r4-32", "--variant", help="Verifier variant (acfd.detection.verifier.VERIFIERS)."),
        epochs: int = typer.Option(16, "--epochs", min=1, help="Training epochs (each pass is run twice: fold, then all)."),
        scale: str | None = typer.Option(None, "--scale", help="The test scale to detect at.",
                                         show_default="the first scale of the weights' interactive preset"),
        nms_thresh: float | None = typer.Option(None, "--nms-thresh", min=0.01, max=1.0, help="NMS IoU threshold.",
                                                show_default="the weights' interactive preset's"),
        flip: bool = typer.Option(True, "--flip/--no-flip", help="Average each crop with its mirror image (2x verifier time)."),
        seed: int = typer.Option(0, "--seed", help="Random seed."),
        max_verifier_logit: float = typer.Option(
            12.0, "--max-verifier-logit", min=0.5,
            help="Cap on the verifier's logit in the score: lower skips more low-scoring boxes at a threshold (faster)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr."),
    ) -> None:
        """Train the second-stage face verifier of WEIGHTS on annotated images."""
        from acfd.detection.verifier import VERIFIERS, save_verifier  # run time: start-up stays light
        from acfd.engine.verifier_training import fit_verifier
        from acfd.predict.modelfile import verifier_path

        require_extra("train", "acfd train-verifier")  # scikit-learn fits at the end: say so before the long pass
        check_detector_weights(weights, "a verifier is fitted for a .safetensors weights file")
        if variant not in VERIFIERS:
            fail(f"unknown verifier variant {variant!r}; choose from {', '.join(sorted(VERIFIERS))}")
        out = output or verifier_path(weights)
        if out.resolve() == weights.resolve():
            fail(f"{out}: would overwrite the detector weights")
        check_output_file(out)
        check_not_inputs(out, [p for p in (gt, split) if p is not None])
        records, names = read_annotated_images(gt, images, split, "train on")
        try:
            fit = fit_verifier(weights, images, records, names, variant=variant, epochs=epochs, scale=scale,
                               nms_thresh=nms_thresh, flip=flip, seed=seed, progress=progress,
                               max_verifier_logit=max_verifier_logit,
                               source=f"{split.name if split else gt.name} in {images}")
        except ValueError as exc:
            fail(f"{weights}: {exc}")
        for name, reason in fit.failed.items():
            typer.echo(f"{images / name}: {reason}", err=True)
        save_verifier(fit.verifier.model, fit.verifier.stacking, out, detector=fit.verifier.detector)
        held = ", ".join(f"{k} {v:.2f}" for k, v in fit.holdout_ap50.items())
        typer.echo(f"{out}: {variant} trained on {fit.num_samples} crops ({fit.num_faces} faces); "
                   f"held-out AP50 ({fit.holdout_images} images): {held}")
        if fit.failed:
            raise typer.Exit(1)
