"""Prediction: the :class:`Detector` pipeline and what it needs, and the batch runner over files.

* :mod:`~acfd.predict.scales`: test scales and their mini-language (``960:max128:noflip``);
* :mod:`~acfd.predict.presets`: the :class:`Preset` of settings (interactive / evaluation / paper);
* :mod:`~acfd.predict.modelfile`: :class:`ModelFile`, what a weights file is and carries;
* :mod:`~acfd.predict.inputs`, :mod:`~acfd.predict.results`: images in, :class:`Detections` out;
* :mod:`~acfd.predict.backends`, :mod:`~acfd.predict.detector`: the networks' engines and the pipeline;
* :mod:`~acfd.predict.sources`, :mod:`~acfd.predict.batch`, :mod:`~acfd.predict.ray_engine`: files,
  folders, globs and videos run in order, locally or on Ray Data, and written as CSV / JSON / COCO.

The names below are imported on first use, so that reading a preset or a scale (the command
line's ``--help``) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from acfd.predict.detector import Detector
    from acfd.predict.modelfile import ModelFile
    from acfd.predict.presets import Preset
    from acfd.predict.results import Detections, Timings
    from acfd.predict.scales import Scale, parse_scales

_LAZY = {
    "Detector": "acfd.predict.detector",
    "Detections": "acfd.predict.results",
    "ModelFile": "acfd.predict.modelfile",
    "Preset": "acfd.predict.presets",
    "Scale": "acfd.predict.scales",
    "Timings": "acfd.predict.results",
    "parse_scales": "acfd.predict.scales",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'acfd.predict' has no attribute {name!r}")
