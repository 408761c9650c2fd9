"""The maintainer tools in tools/ that compute something: tools/soup.py (the mean of several runs'
weights) and tools/train_gpu.sh (its usage and data checks; the training itself is acfd train)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _weights(path: Path, value: float, extra_key: bool = False) -> Path:
    state = {"conv.weight": torch.full((2, 3), value), "bn.num_batches_tracked": torch.tensor(int(value))}
    if extra_key:
        state["head.bias"] = torch.zeros(2)
    save_file(state, str(path), metadata={"model": "acfd-tiny", "config": "{}", "score_calibration": "{}"})
    return path


def test_soup_is_the_weighted_mean_of_the_float_tensors(tmp_path: Path) -> None:
    soup = _tool("soup")
    a, b = _weights(tmp_path / "a.safetensors", 1.0), _weights(tmp_path / "b.safetensors", 3.0)
    assert soup.main([str(a), str(b), "-o", str(tmp_path / "s.safetensors")]) == 0
    out = load_file(str(tmp_path / "s.safetensors"))
    assert torch.allclose(out["conv.weight"], torch.full((2, 3), 2.0))
    assert out["bn.num_batches_tracked"].item() == 1  # counters: the first file's
    with safe_open(str(tmp_path / "s.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["model"] == "acfd-tiny" and "score_calibration" not in meta  # fitted for an input: dropped
    assert json.loads(meta["souped_from"]) == [["a.safetensors", 0.5], ["b.safetensors", 0.5]]

    assert soup.main([str(a), str(b), "-o", str(tmp_path / "w.safetensors"), "--weights", "3", "1", "--half"]) == 0
    out = load_file(str(tmp_path / "w.safetensors"))
    assert out["conv.weight"].dtype == torch.float16
    assert torch.allclose(out["conv.weight"].float(), torch.full((2, 3), 1.5))


def test_soup_refuses_other_architectures_and_overwriting_an_input(tmp_path: Path, capsys) -> None:
    soup = _tool("soup")
    a = _weights(tmp_path / "a.safetensors", 1.0)
    c = _weights(tmp_path / "c.safetensors", 1.0, extra_key=True)
    assert soup.main([str(a), str(c), "-o", str(tmp_path / "s.safetensors")]) == 1
    assert "other tensors" in capsys.readouterr().err
    assert not (tmp_path / "s.safetensors").exists()
    with pytest.raises(SystemExit):
        soup.main([str(a), str(c), "-o", str(a)])


def test_train_gpu_prints_its_usage_and_checks_the_data(tmp_path: Path) -> None:
    script = ROOT / "tools" / "train_gpu.sh"
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "Usage: tools/train_gpu.sh MODEL EPOCHS" in usage.stderr
    missing = subprocess.run(["bash", str(script), "acfd-n", "1"], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin", "ACFD_DATA": str(tmp_path)})
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: {tmp_path}/images: not found (set ACFD_DATA to the iCartoonFace detection folder)"
