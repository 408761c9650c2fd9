"""The default model that ships inside the package loads and runs with no arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acfd import Detector
from acfd.models.registry import DEFAULT_MODEL, default_weights_path, load_model


def test_default_weights_ship_in_the_package():
    path = default_weights_path()
    assert path is not None and path.is_file(), "src/acfd/weights/<default>.safetensors is missing"
    assert path.stat().st_size < 20 * 2**20
    model = load_model()
    assert model.cfg.name == DEFAULT_MODEL
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_detector_with_no_arguments_runs_on_a_sample(samples_dir):
    det = Detector(score_thresh=0.05)
    assert det.cfg.name == DEFAULT_MODEL
    faces = det(samples_dir / "personai_icartoonface_dettrain_00330.jpg")
    assert faces.image_size == (472, 848)
    assert np.all(np.diff(faces.scores) <= 0)
    if len(faces):
        assert faces.boxes[:, [0, 2]].min() >= 0 and faces.boxes[:, [0, 2]].max() <= 848
        assert faces.boxes[:, [1, 3]].min() >= 0 and faces.boxes[:, [1, 3]].max() <= 472
    with pytest.raises(ValueError):
        Detector(score_thresh=0.05)(np.zeros((0, 10, 3), dtype=np.uint8))
