"""Shared fixtures. Tests that need ../shared skip cleanly when it is absent (a user's fresh clone)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from browser_fixtures import browser, live_server  # noqa: F401 - the shared web-app test fixtures

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO_ROOT / "samples"
SHARED_DIR = Path(os.environ.get("ACFD_SHARED", REPO_ROOT.parent / "shared"))

torch.set_num_threads(min(2, torch.get_num_threads()))

# Detector's ONNX exports (acfd.deploy.onnx_runner.cached_onnx) go to a per-run folder, never ~/.cache.
if "ACFD_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["ACFD_CACHE_DIR"] = tempfile.mkdtemp(prefix="acfd-test-cache-")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (or $ACFD_SHARED); skips the test when it is not there."""
    if not (SHARED_DIR / "data" / "icartoonface-det").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DIR}")
    return SHARED_DIR


@pytest.fixture(scope="session")
def det_data_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "icartoonface-det"


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES_DIR


@pytest.fixture(scope="session")
def spread_tiny_model() -> torch.nn.Module:
    """acfd-tiny (random, seed 0) whose classifier logits are spread over 0..1: many boxes at
    every score, for tests of what happens to scores after the network."""
    from acfd.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("acfd-tiny").eval()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.out_channels == 1:  # the classification conv
            m.bias.data.zero_()
            m.weight.data.mul_(10.0)
    return model
