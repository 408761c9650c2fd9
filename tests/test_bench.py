"""The pipeline benchmark (``acfd.engine.bench``) and the ``export`` / ``bench`` commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from acfd.cli.export_cmd import register
from acfd.engine.bench import (
    BenchResult,
    format_table,
    parse_backends,
    parse_batch_sizes,
    parse_size,
    run_benchmark,
    synthetic_frame,
)
from acfd.deploy.onnx_runner import OnnxRunner
from acfd.models import create_model
from acfd.predict.modelfile import save_weights


@pytest.fixture()
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # keeps "export" / "bench" as subcommands
        pass

    register(app)
    return app


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(120, 180), (150, 100)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


# -- helpers ----------------------------------------------------------------------------------


def test_parse_backends() -> None:
    assert parse_backends(None, "cpu") == ["eager", "fused", "onnx"]
    assert parse_backends("all", "cuda") == ["eager", "fused", "onnx", "compile", "tensorrt"]
    assert parse_backends("ONNX, fused,onnx", "cpu") == ["onnx", "fused"]
    with pytest.raises(ValueError, match="unknown backend"):
        parse_backends("eager,tflite", "cpu")
    with pytest.raises(ValueError, match="no backends"):
        parse_backends(",", "cpu")


def test_parse_batch_sizes_and_size() -> None:
    assert parse_batch_sizes("1,8") == [1, 8]
    assert parse_batch_sizes([4, 4, 2]) == [4, 2]
    for bad in ("0", "1,x", ""):
        with pytest.raises(ValueError):
            parse_batch_sizes(bad)
    assert parse_size("1080x1920") == (1080, 1920)
    assert parse_size((256, 448)) == (256, 448)
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        parse_size("1080")


def test_synthetic_frame_is_deterministic_rgb() -> None:
    a, b = synthetic_frame(90, 160), synthetic_frame(90, 160)
    assert a.shape == (90, 160, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, synthetic_frame(90, 160, seed=1))
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 10


def test_format_table_aligns_columns() -> None:
    rows = [
        BenchResult("eager", "640", 1, "frame 1080x1920", 1.5, 120.25, 3.0, 125.0, 8.0),
        BenchResult("tensorrt", "paper", 8, "frame 1080x1920", note="skipped: needs a CUDA device"),
    ]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["backend", "scales", "batch", "input", "pre", "ms", "net", "ms",
                                "post", "ms", "total", "ms", "img/s", "note"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].split()[:8] == ["eager", "640", "1", "frame", "1080x1920", "1.50", "120.2", "3.00"]
    assert "skipped: needs a CUDA device" in lines[3] and " - " in lines[3]
    # right-aligned numbers: the 'total ms' column ends at the same offset in every row
    end = lines[0].index("total ms") + len("total ms")
    assert lines[2][:end].endswith("125.0") and lines[3][:end].endswith("-")


def test_run_benchmark_rows_and_thread_restore() -> None:
    torch.manual_seed(0)
    model = create_model("acfd-tiny")
    before = torch.get_num_threads()
    report = run_benchmark(
        model,
        backends="eager,fused",
        scale_sets=["128"],
        batch_sizes=[1, 2],
        warmup=0,
        iters=2,
        frame_size=(96, 160),
        num_threads=1,
    )
    assert torch.get_num_threads() == before
    assert [(r.backend, r.batch) for r in report.results] == [
        ("eager", 1), ("eager", 2), ("fused", 1), ("fused", 2)
    ]
    for r in report.results:
        assert r.input == "frame 96x160" and r.scales == "128"
        assert r.network_ms > 0 and r.preprocess_ms > 0 and r.postprocess_ms > 0
        assert r.total_ms >= r.network_ms
        assert r.images_per_s == pytest.approx(1000.0 / r.total_ms)
    assert report.meta["model"] == "acfd-tiny" and report.meta["torch_threads"] == 1


def test_run_benchmark_shows_its_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 38 A15: acfd bench with the README's arguments ran 16 minutes without a progress bar."""
    from acfd.engine import bench

    bars = []

    class Bar(bench.tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
            import io

            super().__init__(*args, **{**kwargs, "disable": False, "file": io.StringIO()})  # as on a terminal

        def close(self) -> None:
            bars.append((self.n, self.total, self.unit))
            super().close()

    monkeypatch.setattr(bench, "tqdm", Bar)
    run_benchmark(create_model("acfd-tiny"), backends="eager,compile", scale_sets=["128"], batch_sizes=[1, 2],
                  warmup=0, iters=1, frame_size=(96, 160), num_threads=1)
    assert bars and set(bars) == {(4, 4, "config")}  # every configuration counted, the skipped compile ones too


def test_run_benchmark_bad_arguments() -> None:
    model = create_model("acfd-tiny")
    with pytest.raises(ValueError, match="nothing to benchmark"):
        run_benchmark(model, backends="eager", frame_size=None, images=None)
    with pytest.raises(ValueError, match="iters"):
        run_benchmark(model, backends="eager", iters=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            run_benchmark(model, device="cuda")


# -- CLI: bench -------------------------------------------------------------------------------


def test_bench_command_table_and_json(app: typer.Typer, image_dir: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "bench.json"
    result = CliRunner().invoke(
        app,
        [
            "bench", "--model", "acfd-tiny", "--backends", "eager,fused,onnx,compile",
            "--scales", "256", "--scales", "128x192,192x256", "--batch-sizes", "1,2",
            "--warmup", "1", "--iters", "2", "--frame-size", "256x448", "--images", str(image_dir),
            "--threads", "1", "--json", str(out_json),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("backend"))
    assert "pre ms" in lines[header] and "net ms" in lines[header] and "post ms" in lines[header]
    rows = [line for line in lines[header + 2 :] if line and not line.startswith("wrote")]
    expected = [
        (backend, scales, str(batch), source)
        for backend in ("eager", "fused", "onnx", "compile")
        for scales in ("256", "128x192,192x256")
        for source in ("frame 256x448", f"{image_dir.name} (2)")
        for batch in (1, 2)
    ]
    assert len(rows) == len(expected)
    number = r"\d+\.\d+"
    for row, (backend, scales, batch, source) in zip(rows, expected):
        assert row.split()[:3] == [backend, scales, batch], row
        assert source in row
        if backend == "compile":  # CPU: skipped, with the reason
            assert "skipped: needs a CUDA device" in row
        else:
            assert len(re.findall(number, row)) == 5, row  # pre, net, post, total, img/s
    assert "onnxruntime CPU" in result.output

    data = json.loads(out_json.read_text())
    assert data["meta"]["model"] == "acfd-tiny" and data["meta"]["iters"] == 2
    assert len(data["results"]) == len(expected)
    timed = [r for r in data["results"] if r["backend"] != "compile"]
    assert all(r["total_ms"] > 0 and r["network_ms"] > 0 for r in timed)
    assert all(r["total_ms"] is None for r in data["results"] if r["backend"] == "compile")


def test_bench_command_errors(app: typer.Typer, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "--model", "acfd-tiny", "--backends", "tflite"])
    assert result.exit_code == 1 and "unknown backend" in result.output
    result = runner.invoke(app, ["bench", "--model", "acfd-tiny", "--images", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "nope" in result.output
    result = runner.invoke(app, ["bench", "--model", "acfd-tiny", "--scales", "abc"])
    assert result.exit_code == 1 and "invalid scale" in result.output


# -- CLI: export ------------------------------------------------------------------------------


def test_export_command_from_a_name(app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "tiny.onnx"
    result = CliRunner().invoke(app, ["export", "acfd-tiny", "-o", str(out), "--size", "128x128"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "opset 17" in result.output
    assert "check: max |onnxruntime - pytorch|" in result.output
    assert OnnxRunner(out).model_name == "acfd-tiny"


def test_export_command_from_weights_defaults_next_to_them(app: typer.Typer, tmp_path: Path) -> None:
    weights = save_weights(create_model("acfd-tiny"), tmp_path / "my-model.safetensors")
    result = CliRunner().invoke(
        app, ["export", str(weights), "--opset", "18", "--size", "128x128", "--no-check"]
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "my-model.onnx"
    assert out.is_file() and "opset 18" in result.output and "check:" not in result.output
    import onnx

    assert {o.domain: o.version for o in onnx.load(str(out)).opset_import}[""] == 18


def test_export_command_errors(app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(tmp_path / "missing.safetensors")])
    assert result.exit_code == 1 and "missing.safetensors" in result.output
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = runner.invoke(
        app, ["export", "acfd-tiny", "--format", "tensorrt", "-o", str(tmp_path / "m.ep")]
    )
    assert result.exit_code == 1 and "TensorRT export needs a CUDA GPU" in result.output
    assert not (tmp_path / "m.ep").exists()


def test_export_and_bench_check_before_the_work(app: typer.Typer, tmp_path: Path) -> None:
    """Issues 10.6 (--threads 1000), 10.10 (--device), 10.12 (--static 320x320), 10.19 (names)."""
    runner = CliRunner()
    result = runner.invoke(app, ["export", "acfd-tiny", "--static", "--size", "320x320", "-o", str(tmp_path / "s.onnx")])
    assert result.exit_code == 1 and "use --size 384x384 or --dynamic" in result.output
    assert not (tmp_path / "s.onnx").exists()
    result = runner.invoke(app, ["export", "acfd-tiny", "--static", "--size", "128x256", "-o", str(tmp_path / "s.onnx"), "--no-check"])
    assert result.exit_code == 0, result.output
    (tmp_path / "f").write_text("x")
    result = runner.invoke(app, ["export", "acfd-tiny", "-o", str(tmp_path / "f" / "m.onnx")])
    assert result.exit_code == 1 and "is a file, not a folder" in result.output
    result = runner.invoke(app, ["bench", "--model", "acfd-tiny", "--threads", "100000"])
    assert result.exit_code == 2 and "--threads" in result.output
    result = runner.invoke(app, ["bench", "--model", "acfd-tiny", "--device", "foo"])
    assert result.exit_code == 1 and "unknown device" in result.output
    result = runner.invoke(app, ["bench", "--model", "acfd-tiny", "--score-thresh", "2"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["bench", "--model", "acfd-tiny", "--json", str(tmp_path / "f" / "b.json")])
    assert result.exit_code == 1 and "--json" in result.output and "is a file" in result.output
