"""Growing a trained detector into a wider variant (``acfd.models.widen``, ``acfd widen``)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from acfd.cli import app
from acfd.models.registry import create_model
from acfd.predict.modelfile import load_model, save_weights
from acfd.models.widen import channel_mapping, widen_model


def _trained_like(name: str, **overrides) -> torch.nn.Module:
    """A model whose norms are not at their init values (so a wrong mapping shows)."""
    torch.manual_seed(0)
    model = create_model(name, **overrides)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("head_norm", ["gn", "none"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_widened_model_computes_the_same_outputs(head_norm, mode):
    small = _trained_like("acfd-tiny", **{"head.norm": head_norm}).train(mode == "train")
    wide = widen_model(small, neck_channels=24, head_channels=32).train(mode == "train")
    assert wide.cfg.neck.channels == 24 and wide.cfg.head.channels == 32
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in small.parameters())
    x = torch.rand(2, 3, 128, 160)
    with torch.no_grad():
        for a, b in zip(small(x), wide(x)):
            assert a.shape == b.shape
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), float((a - b).abs().max())


def test_copies_of_a_channel_get_different_input_weights():
    """The uneven split breaks the symmetry between copies, so training can tell them apart."""
    small = _trained_like("acfd-tiny", **{"head.norm": "gn"})
    wide = widen_model(small, neck_channels=16, head_channels=32)
    w = wide.head.cls_logits.weight  # input channels 2j and 2j+1 copy old channel j
    assert not torch.allclose(w[:, 0::2], w[:, 1::2])
    assert torch.allclose(w[:, 0::2] + w[:, 1::2], small.head.cls_logits.weight, atol=1e-6)


def test_channel_mapping_keeps_groupnorm_groups_for_whole_factors():
    gen = torch.Generator().manual_seed(0)
    assert channel_mapping(4, 8, gen).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    mapping = channel_mapping(4, 6, gen)
    assert mapping[:4].tolist() == [0, 1, 2, 3] and all(0 <= int(c) < 4 for c in mapping[4:])
    with pytest.raises(ValueError, match="fewer"):
        channel_mapping(8, 4, gen)


def test_groupnorm_head_refuses_a_fractional_widening():
    small = create_model("acfd-tiny", **{"head.norm": "gn"})
    with pytest.raises(ValueError, match="whole factor"):
        widen_model(small, neck_channels=16, head_channels=24)


def test_widen_cli_writes_a_loadable_wider_variant(tmp_path):
    src = save_weights(_trained_like("acfd-n", **{"head.norm": "gn"}), tmp_path / "n.safetensors")
    out = tmp_path / "nw.safetensors"
    result = CliRunner().invoke(app, ["widen", str(src), "--to", "acfd-nw", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "outputs equal" in result.output
    wide, small = load_model(out), load_model(src)
    assert wide.cfg.name == "acfd-nw" and wide.cfg.head.norm == "gn"  # the trained settings are kept
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(small(x)[0], wide(x)[0], atol=1e-4)


def test_widen_cli_refuses_another_backbone(tmp_path):
    src = save_weights(create_model("acfd-n"), tmp_path / "n.safetensors")
    out = tmp_path / "s.safetensors"
    result = CliRunner().invoke(app, ["widen", str(src), "--to", "acfd-s", "-o", str(out)])
    assert result.exit_code == 1
    assert "another backbone" in result.output and not out.exists()


def test_widen_cli_refuses_a_neck_of_another_structure(tmp_path):
    src = save_weights(create_model("acfd-n", **{"neck.repeats": 1}), tmp_path / "n.safetensors")
    out = tmp_path / "nw.safetensors"
    result = CliRunner().invoke(app, ["widen", str(src), "--to", "acfd-nw", "-o", str(out)])
    assert result.exit_code == 1
    assert "more than their widths" in result.output and not out.exists()
