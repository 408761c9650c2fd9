"""``acfd models``: one line per variant with params / MB / GFLOPs."""

from __future__ import annotations

from typer.testing import CliRunner

from acfd.cli import app
from acfd.deploy.fuse import fuse_model
from acfd.models.registry import count_parameters, create_model


def test_models_lists_sizes_of_the_named_variants():
    result = CliRunner().invoke(app, ["models", "acfd-tiny", "acfd-n", "--size", "128"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines()[1:] if line.strip()}
    assert set(lines) == {"acfd-tiny", "acfd-n"}
    params = float(lines["acfd-n"][3])
    expected = count_parameters(fuse_model(create_model("acfd-n"), inplace=True)) / 1e6
    assert abs(params - expected) < 0.01
    assert float(lines["acfd-tiny"][5]) > 0  # GFLOPs at 128x128
    # issue 38 A15: the variant with shipped weights is marked, the others are not
    assert lines["acfd-n"][6:] == ["shipped"] and lines["acfd-tiny"][6:] == []


def test_models_unknown_name_exits_2():
    result = CliRunner().invoke(app, ["models", "acfd-nope"])
    assert result.exit_code == 2


def test_models_figures_are_cached_and_match_a_real_build(tmp_path, monkeypatch):
    """Issue 10.18: `acfd models` took 83 s; now meta-device figures, cached on disk."""
    from acfd.cli import models_cmd
    from acfd.models.registry import count_gflops, model_size_mb

    monkeypatch.setenv("ACFD_CACHE_DIR", str(tmp_path))
    real = fuse_model(create_model("acfd-tiny"), inplace=True)
    facts = models_cmd.model_facts("acfd-tiny", 128, fused=True)
    assert facts["params"] == count_parameters(real)
    assert abs(facts["mb"] - model_size_mb(real)) < 1e-9
    assert abs(facts["gflops"] - count_gflops(real, 128, 128)) < 1e-9
    assert CliRunner().invoke(app, ["models", "acfd-tiny", "--size", "128"]).exit_code == 0
    assert (tmp_path / "model_facts.json").is_file()
    monkeypatch.setattr(models_cmd, "model_facts", lambda *a: (_ for _ in ()).throw(AssertionError("not cached")))
    result = CliRunner().invoke(app, ["models", "acfd-tiny", "--size", "128"])
    assert result.exit_code == 0, result.output


# --- load_model: one-line errors (issue 10.7) --------------------------------------------------


def test_weights_of_another_variant_are_one_line(tmp_path):
    import pytest

    from acfd.predict.modelfile import load_model, save_weights

    tiny = save_weights(create_model("acfd-tiny"), tmp_path / "tiny.safetensors")
    with pytest.raises(ValueError) as info:
        load_model("acfd-n", weights=tiny)
    assert str(info.value) == f"{tiny}: these weights are acfd-tiny, not acfd-n (use --model acfd-tiny or leave --model out)"
    assert load_model(tiny).cfg.name == "acfd-tiny"  # no --model: the variant the file names


def test_corrupt_empty_and_onnx_weights_name_the_file(tmp_path):
    import pytest

    from acfd.predict.modelfile import load_model, save_weights

    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not safetensors at all" * 10)
    good = save_weights(create_model("acfd-tiny"), tmp_path / "good.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    ckpt = tmp_path / "cut.pt"
    ckpt.write_bytes(b"\x80\x04garbage")
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    for path, words in ((empty, "the file is empty"), (garbage, "not a readable .safetensors"),
                        (truncated, "not a readable .safetensors"), (ckpt, "not a readable checkpoint"),
                        (onnx, "holds no PyTorch weights")):
        for call in (lambda p=path: load_model(p), lambda p=path: load_model("acfd-tiny", weights=p)):
            with pytest.raises(ValueError) as info:
                call()
            msg = str(info.value)
            assert msg.startswith(f"{path}: ") and words in msg and "\n" not in msg, msg


# --- model names and weights (issue 38 A2, A10) -------------------------------------------------


def test_a_name_means_its_shipped_weights_and_weights_keep_their_own_config(tmp_path):
    """A2: --model acfd-n meant random weights, and --model acfd-n --weights <the shipped file>
    failed (its GroupNorm head is not the registered acfd-n's)."""
    import torch

    from acfd.predict.modelfile import ModelFile, default_weights_path, load_model, save_weights

    shipped = default_weights_path()
    assert shipped is not None
    assert ModelFile.open("acfd-n").path == shipped
    by_name, by_default, by_both = load_model("acfd-n"), load_model(), load_model("acfd-n", weights=shipped)
    for model in (by_name, by_both):
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), by_default.state_dict().values()))
    assert by_both.cfg == by_default.cfg and by_default.cfg.head.norm == "gn"
    gn = save_weights(create_model("acfd-tiny", **{"head.norm": "gn"}), tmp_path / "gn.safetensors")
    assert load_model("acfd-tiny", weights=gn).cfg.head.norm == "gn"
    # a variant with no shipped weights: no file (random weights, with a warning, in Python)
    assert ModelFile.open("acfd-s").path is None


def test_recognition_weights_are_not_a_detector():
    """A10: recognition weights given as a detector said "unknown backbone config keys: ['0', '1', ...]"."""
    from pathlib import Path

    import pytest

    from acfd.predict.modelfile import ModelFile

    recognition = Path(__file__).parents[1] / "src" / "acfd" / "weights" / "recognition-cartoon-s.safetensors"
    if not recognition.is_file():
        pytest.skip("no shipped recognition weights")
    with pytest.raises(ValueError, match="these are recognition weights, not a face detector's"):
        ModelFile.open(recognition)
