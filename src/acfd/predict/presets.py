"""Inference presets: the settings a detector runs with, recommended for one weights file.

A :class:`Preset` holds the test scales, the score threshold (and the floor on the network's raw
scores), the NMS threshold, the test-time flip and the view-agreement rescoring. Three are named:

* ``interactive``: what ``Detector()`` and ``acfd detect`` use: few, confident boxes, fast;
* ``evaluation``: for AP and submissions (``Detector.for_evaluation``, ``acfd detect --eval``,
  ``acfd eval``): every box above the paper's raw-score floor, so the precision-recall curve is whole;
* ``paper``: the ACFD paper's protocol (4.1), the same for every model.

The interactive and evaluation presets belong to the weights file: whoever trains and measures the
weights writes them into its metadata (key :data:`METADATA_KEY`) or into ``NAME-presets.json``
beside it (the shipped acfd-n has one, so that the weights' bytes, and the fingerprint its verifier
is tied to, stay as they were measured). Weights without presets get :data:`GENERIC_PRESETS`,
settings tuned for no particular file. :class:`acfd.predict.modelfile.ModelFile` reads them.

No heavy imports: the command line and the service read presets before they load torch.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acfd.config import SHIPPED_DETECTOR, WEIGHTS_DIR, dataclass_from_dict
from acfd.detection.protocol import PAPER_NMS_THRESH, PAPER_SCALES, PAPER_SCORE_THRESH
from acfd.predict.scales import parse_scales

#: Metadata key of a weights file's (or an ONNX export's) presets, as JSON.
METADATA_KEY = "acfd_presets"
#: The presets a weights file may set; ``paper`` is the paper's protocol for every file.
FILE_PRESETS = ("interactive", "evaluation")
PRESET_NAMES = (*FILE_PRESETS, "paper")


class _FromPreset(enum.Enum):
    FROM_PRESET = "from the preset"


#: The default of the :class:`~acfd.predict.detector.Detector` settings that can also be ``None``
#: (``agreement_iou``, ``raw_score_floor``: ``None`` turns them off): take the preset's value.
FROM_PRESET = _FromPreset.FROM_PRESET


@dataclass(frozen=True)
class Preset:
    """Inference settings of a detector.

    Args:
        scales: test scales (:func:`acfd.predict.scales.parse_scales` specs, e.g. ``"640"``,
            ``"960:max128:noflip"``).
        score_thresh: keep boxes whose reported score (calibrated and verified when the weights
            carry a calibration and a verifier) is above this.
        nms_thresh: NMS IoU threshold, within and across scales and views.
        flip: also run each scale on the mirrored image (test-time flip).
        agreement_iou: with several views, rescore each merged box by how many views found it at
            IoU >= this; ``None``: off.
        raw_score_floor: never keep a box whose raw network score is at or below this (the
            paper's 0.08 for evaluation); ``None``: only ``score_thresh`` decides.
        verifier_max_boxes: the verifier crops at most this many boxes of an image, its best; the
            others keep their box and get the verifier's ``unverified_logit``
            (:func:`acfd.detection.verifier_runtime.rescore_boxes`). ``None``: every box that can
            end above ``score_thresh``. It bounds the evaluation setting's cost (tens of boxes
            per image); with a threshold the verifier's gate already leaves few.
        note: how the settings were chosen (one line, for people).
    """

    scales: tuple[str, ...]
    score_thresh: float
    nms_thresh: float
    flip: bool = False
    agreement_iou: float | None = None
    raw_score_floor: float | None = None
    verifier_max_boxes: int | None = None
    note: str = ""

    def __post_init__(self) -> None:
        scales = (self.scales,) if isinstance(self.scales, (str, int)) else self.scales
        object.__setattr__(self, "scales", tuple(str(s) for s in scales))
        parse_scales(self.scales)  # a ValueError naming the bad scale
        if not 0.0 <= float(self.score_thresh) <= 1.0:
            raise ValueError(f"score_thresh must be in [0, 1], got {self.score_thresh}")
        if not 0.0 < float(self.nms_thresh) <= 1.0:
            raise ValueError(f"nms_thresh must be in (0, 1], got {self.nms_thresh}")
        if self.agreement_iou is not None and not 0.0 < float(self.agreement_iou) <= 1.0:
            raise ValueError(f"agreement_iou must be in (0, 1] or None, got {self.agreement_iou}")
        if self.raw_score_floor is not None and not 0.0 <= float(self.raw_score_floor) <= 1.0:
            raise ValueError(f"raw_score_floor must be in [0, 1] or None, got {self.raw_score_floor}")
        if self.verifier_max_boxes is not None and (isinstance(self.verifier_max_boxes, bool)
                                                    or not isinstance(self.verifier_max_boxes, int) or self.verifier_max_boxes < 1):
            raise ValueError(f"verifier_max_boxes must be an integer >= 1 or None, got {self.verifier_max_boxes!r}")
        if not isinstance(self.flip, bool):
            raise ValueError(f"flip must be true or false, got {self.flip!r}")

    def override(self, **changes: Any) -> Preset:
        """A copy with the given settings changed; ``None`` (and :data:`FROM_PRESET`) leave a
        setting as it is, except ``agreement_iou`` / ``raw_score_floor`` / ``verifier_max_boxes``,
        where ``None`` turns it off and only :data:`FROM_PRESET` leaves it. ``agreement_iou=0`` and
        ``verifier_max_boxes=0`` turn them off too (as on the command line)."""
        nullable = ("agreement_iou", "raw_score_floor", "verifier_max_boxes")
        kept = {k: v for k, v in changes.items()
                if v is not FROM_PRESET and (v is not None or k in nullable)}
        for key in ("agreement_iou", "verifier_max_boxes"):
            if kept.get(key) == 0:
                kept[key] = None
        if "scales" in kept and not isinstance(kept["scales"], (str, int)):
            kept["scales"] = tuple(str(s) for s in kept["scales"])
        return dataclasses.replace(self, **kept) if kept else self

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "scales": list(self.scales)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str = "preset") -> Preset:
        """Read :meth:`to_dict`'s mapping (unknown keys and bad values raise ``ValueError``)."""
        return dataclass_from_dict(cls, data, f"{name} preset")


#: The paper's protocol (4.1): its three exact resizes, raw score > 0.08, NMS 0.55, no flip.
PAPER_PRESET = Preset(PAPER_SCALES, score_thresh=0.0, nms_thresh=PAPER_NMS_THRESH,
                      raw_score_floor=PAPER_SCORE_THRESH, note="the ACFD paper's protocol (4.1)")

#: For weights that carry no presets: one scale at the training crop size, a threshold of 0.5
#: (calibrated scores: as likely a face as not) and the NMS of most one-stage detectors for
#: interactive use; the paper's protocol for evaluation.
GENERIC_PRESETS: dict[str, Preset] = {
    "interactive": Preset(("640",), score_thresh=0.5, nms_thresh=0.5,
                          note="generic: longer side 640, score > 0.5, NMS 0.5"),
    "evaluation": dataclasses.replace(PAPER_PRESET, note="generic: the ACFD paper's protocol (4.1)"),
}


def presets_to_json(presets: Mapping[str, Preset]) -> str:
    """The JSON text of a file's presets (:data:`FILE_PRESETS` only)."""
    return json.dumps({k: v.to_dict() for k, v in presets.items() if k in FILE_PRESETS}, sort_keys=True)


def presets_from_json(text: str, source: str) -> dict[str, Preset]:
    """Parse :func:`presets_to_json`'s text; one ``ValueError`` naming ``source`` when it is not."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping of preset names, got {type(data).__name__}")
        unknown = sorted(set(data) - set(FILE_PRESETS))
        if unknown:
            raise ValueError(f"unknown presets {', '.join(unknown)} (a file sets {' and '.join(FILE_PRESETS)})")
        return {name: Preset.from_dict(value, name) for name, value in data.items()}
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"{source}: not valid inference presets ({exc})") from None


def presets_path(weights: str | Path) -> Path:
    """Where the presets of a weights file live when they are not in its metadata:
    ``NAME-presets.json`` beside it."""
    p = Path(weights)
    return p.with_name(f"{p.stem}-presets.json")


def read_presets(metadata: Mapping[str, str], weights: str | Path | None) -> dict[str, Preset]:
    """A weights file's presets: from its ``metadata``, else from :func:`presets_path` beside
    ``weights``; each one it does not set is generic; ``paper`` is always :data:`PAPER_PRESET`.

    Raises:
        ValueError: presets that are not valid (naming the file).
    """
    text, source = metadata.get(METADATA_KEY), str(weights)
    if text is None and weights is not None and presets_path(weights).is_file():
        source = str(presets_path(weights))
        text = presets_path(weights).read_text(encoding="utf-8")
    found = presets_from_json(text, source) if text is not None else {}
    return {**GENERIC_PRESETS, **found, "paper": PAPER_PRESET}


def shipped_presets() -> dict[str, Preset]:
    """The presets of the shipped detector (generic ones when the install ships no weights),
    without loading them: for ``--help`` texts and service defaults."""
    return read_presets({}, WEIGHTS_DIR / f"{SHIPPED_DETECTOR}.safetensors")


__all__ = [
    "FILE_PRESETS",
    "FROM_PRESET",
    "GENERIC_PRESETS",
    "METADATA_KEY",
    "PAPER_PRESET",
    "PRESET_NAMES",
    "Preset",
    "presets_from_json",
    "presets_path",
    "presets_to_json",
    "read_presets",
    "shipped_presets",
]
