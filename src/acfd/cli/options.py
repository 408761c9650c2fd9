"""Options shared by the commands that run a detector (``detect``, ``eval``): the inference preset
and the settings that change it, spelled one way everywhere, and deprecated spellings that still
work with a warning (once per process).

Every setting left out comes from the chosen preset of the weights file
(:mod:`acfd.predict.presets`); ``--help`` shows the shipped model's values. Nothing here loads torch.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Any, TypeVar

import typer

from acfd.cli.errors import EXIT_USAGE, CliError
from acfd.deploy.precision import PRECISIONS
from acfd.predict.presets import PRESET_NAMES, shipped_presets
from acfd.predict.scales import parse_scales

logger = logging.getLogger(__name__)
T = TypeVar("T")

PresetName = Enum("PresetName", {name: name for name in PRESET_NAMES}, type=str)  # type: ignore[misc]
PresetName.__doc__ = "Inference presets (--preset)."
Precision = Enum("Precision", {name: name for name in PRECISIONS}, type=str)  # type: ignore[misc]
Precision.__doc__ = "The detector network's numbers on the CPU (--precision)."

_SHIPPED = shipped_presets()
_warned: set[str] = set()


def shipped_values(setting: str, presets: tuple[str, ...] = ("interactive", "evaluation")) -> str:
    """``"0.35 (interactive), 0 (evaluation)"``: a setting of the shipped model's presets, for ``--help``."""
    def show(value: Any) -> str:
        if value is None:
            return "off"
        if isinstance(value, bool):
            return "on" if value else "off"
        return ",".join(value) if isinstance(value, tuple) else f"{value:g}"

    return ", ".join(f"{show(getattr(_SHIPPED[p], setting))} ({p})" for p in presets)


def preset_option(default: str = "interactive") -> Any:
    return typer.Option(
        default, "--preset",
        help="Where the settings come from: the weights' recommended interactive or evaluation settings, or "
        "the paper's protocol (480x645,640x860,800x1075, raw score > 0.08, NMS 0.55, no flip). Weights "
        "without presets get generic ones. Any setting below changes the preset's.",
    )


def threads_option() -> Any:
    return typer.Option(
        None, "--threads", min=1,
        help="CPU threads of the networks (ONNX Runtime; PyTorch too when given). Fewer than the cores "
        "leaves room for other jobs on a shared machine.",
        show_default="the cores this process may use",
    )


def precision_option() -> Any:
    return typer.Option(
        "auto", "--precision",
        help="The detector network's numbers on the CPU: int8 (its quantized graph: the shipped model has one), "
        "float32, or auto: int8 on CPUs with int8 dot products (AVX512-VNNI, AVX-VNNI, AMX), else float32.",
    )


def score_thresh_option(what: str = "") -> Any:
    return typer.Option(
        None, "--score-thresh", min=0.0, max=1.0,
        help=f"{what}Keep boxes scoring above this (the reported scores: calibrated when the weights hold a calibration).",
        show_default=f"the preset's; shipped model: {shipped_values('score_thresh')}",
    )


def deprecated_score_thr_option() -> Any:
    return typer.Option(None, "--score-thr", min=0.0, max=1.0, hidden=True, help="Deprecated: --score-thresh.")


def scales_option(what: str = "") -> Any:
    return typer.Option(
        None, "--scales",
        help=f"{what}Test scales: HxW resizes exactly, N sets the longer side; comma-separated for "
        "multi-scale, or 'paper' (480x645,640x860,800x1075). A scale may add :max<N> (keep only its "
        "boxes under N px in its input) and :noflip (never mirrored), e.g. 960:max128:noflip.",
        show_default=f"the preset's; shipped model: {shipped_values('scales')}",
    )


def flip_option(what: str = "") -> Any:
    return typer.Option(
        None, "--flip/--no-flip",
        help=f"{what}Test-time flip: also run each scale (but :noflip ones) on the mirrored image and merge (about twice the time).",
        show_default=f"the preset's; shipped model: {shipped_values('flip')}",
    )


def nms_thresh_option(what: str = "") -> Any:
    return typer.Option(
        None, "--nms-thresh", min=0.01, max=1.0, help=f"{what}NMS IoU threshold (across scales and views).",
        show_default=f"the preset's; shipped model: {shipped_values('nms_thresh')}",
    )


def agreement_iou_option(what: str = "") -> Any:
    return typer.Option(
        None, "--agreement-iou", min=0.0, max=1.0,
        help=f"{what}With several scales or --flip: rescore each face by how many views found it at this IoU (0 turns it off).",
        show_default=f"the preset's; shipped model: {shipped_values('agreement_iou')}",
    )


def verifier_max_boxes_option(what: str = "") -> Any:
    return typer.Option(
        None, "--verifier-max-boxes", min=0,
        help=f"{what}The verifier crops at most this many faces of an image, its best (0: no limit).",
        show_default=f"the preset's; shipped model: {shipped_values('verifier_max_boxes')}",
    )


def calibration_option(what: str = "") -> Any:
    return typer.Option(
        True, "--calibration/--no-calibration",
        help=f"{what}Use the score calibration stored with the weights (acfd calibrate): scores become the "
        "precision of a box of that size and score on training images; --no-calibration: raw network scores.",
    )


def verifier_option(what: str = "") -> Any:
    return typer.Option(
        True, "--verifier/--no-verifier",
        help=f"{what}Re-score and refine each box with the second-stage face verifier fitted for the weights "
        "(NAME-verifier.safetensors beside them, acfd train-verifier), when there is one; --no-verifier: the detector alone.",
    )


def deprecated(old_value: T | None, old_name: str, new_value: T | None, new_name: str) -> T | None:
    """The value of a setting given under its deprecated spelling ``old_name`` or its name
    ``new_name``; the old spelling warns (once per process).

    Raises:
        CliError: both spellings given with different values.
    """
    if old_value is None:
        return new_value
    if old_name not in _warned:
        _warned.add(old_name)
        logger.warning("%s is deprecated and will be removed; use %s", old_name, new_name)
    if new_value is not None and new_value != old_value:
        raise CliError(f"{old_name} {old_value} and {new_name} {new_value} disagree; give {new_name} only", EXIT_USAGE)
    return old_value


def check_named_model(model: str | None, weights: object | None, option: str = "--model") -> None:
    """A variant name without weights means its shipped weights; a variant none are shipped for
    is refused (its random weights would find nothing: one box over the whole image).

    Raises:
        CliError: a variant name with no weights given and none shipped.
    """
    if model is None or weights is not None:
        return
    from acfd.models.registry import list_models  # run time: start-up stays light
    from acfd.predict.modelfile import shipped_weights

    if model in list_models() and shipped_weights(model) is None:
        raise CliError(f"{option} {model}: no weights are shipped for this variant; give its trained weights "
                       "with --weights FILE", EXIT_USAGE)


def detector_settings(
    preset: str,
    scales: str | None,
    score_thresh: float | None,
    flip: bool | None,
    nms_thresh: float | None,
    agreement_iou: float | None,
    calibration: bool,
    verifier: bool,
    verifier_max_boxes: int | None = None,
) -> dict[str, Any]:
    """The :class:`~acfd.predict.detector.Detector` arguments of these options: the preset and what
    was given to change it (``--agreement-iou 0``: off).

    Raises:
        typer.BadParameter: a bad ``--scales``.
    """
    settings: dict[str, Any] = {"preset": preset}
    if scales is not None:
        try:
            settings["scales"] = tuple(str(s) for s in parse_scales(scales))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--scales'") from exc
    given = {"score_thresh": score_thresh, "flip": flip, "nms_thresh": nms_thresh}
    settings.update({k: v for k, v in given.items() if v is not None})
    if agreement_iou is not None:
        settings["agreement_iou"] = agreement_iou or None
    if verifier_max_boxes is not None:
        settings["verifier_max_boxes"] = verifier_max_boxes or None
    if not calibration:
        settings["calibration"] = None
    if not verifier:
        settings["verifier"] = None
    return settings


__all__ = [
    "PresetName",
    "agreement_iou_option",
    "calibration_option",
    "check_named_model",
    "deprecated",
    "deprecated_score_thr_option",
    "detector_settings",
    "flip_option",
    "nms_thresh_option",
    "preset_option",
    "scales_option",
    "score_thresh_option",
    "shipped_values",
    "verifier_option",
]
