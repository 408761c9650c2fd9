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


def test_models_unknown_name_exits_2():
    result = CliRunner().invoke(app, ["models", "acfd-nope"])
    assert result.exit_code == 2
