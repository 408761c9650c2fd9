"""benchmarks/bench_speed.py, the speed comparison with the cascade detectors, runs end to end (on two
sample images, one pass) and prints its table."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import typer
from conftest import REPO_ROOT
from typer.testing import CliRunner

SCRIPT = REPO_ROOT / "benchmarks" / "bench_speed.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_speed"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_cascade_is_shipped_with_its_licence() -> None:
    text = (REPO_ROOT / "benchmarks" / "assets" / "lbpcascade_animeface.xml").read_text()
    assert "The MIT License" in text and "nagadomi" in text and "<featureType>LBP</featureType>" in text


def test_bench_speed_prints_the_table_on_the_samples(samples_dir: Path) -> None:
    bench = load_bench()
    app = typer.Typer()
    app.command()(bench.main)
    result = CliRunner().invoke(app, [
        "--images", "2", "--passes", "1", "--threads", "1", "--split", "", "--no-submission",
        "--images-dir", str(samples_dir), "--annotations", str(samples_dir / "annotations.csv"),
    ])
    assert result.exit_code == 0, result.output
    out = result.output
    assert re.search(r"^machine: .+, \d+ cores usable, flags: ", out, re.MULTILINE)
    assert "load average at start:" in out and "load average at end:" in out
    assert "2 images from" in out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.splitlines() if line.startswith("| ") and "---" not in line}
    default = next(v for k, v in rows.items() if k.startswith("acfd default"))
    no_verifier = next(v for k, v in rows.items() if k.startswith("acfd without the verifier"))
    cascade = next(v for k, v in rows.items() if k.startswith("lbpcascade_animeface"))
    for row in (default, no_verifier, cascade):
        assert float(row[0]) > 0 and float(row[1]) > 0  # ms and CPU ms per image
        assert 0 <= float(row[3]) <= 100  # AP50 on the samples' annotations
    load, _, _, _, verify = (float(v) for v in default[2].split(" / "))
    assert load > 0 and verify > 0 and float(no_verifier[2].split(" / ")[4]) == 0
    assert cascade[2] == "-"
    assert float(default[3]) > 50  # the shipped detector finds most sample faces
    assert any(k.startswith("animeface") for k in rows) or "animeface" in out.split("| setting")[0]
    assert not any(k.startswith("acfd submission") for k in rows)


FAKE_ANIMEFACE = '''
class Box:
    def __init__(self, x, y, width, height):
        self.x, self.y, self.width, self.height = x, y, width, height

class Part:
    def __init__(self, pos):
        self.pos = pos

class Face:
    def __init__(self, size):
        self.face = Part(Box(10, 20, size[0] // 4, size[1] // 4))
        self.likelihood = 0.9

def detect(image):
    assert image.mode == "RGB"
    return [Face(image.size)]
'''


def fake_animeface(tmp_path: Path) -> Path:
    folder = tmp_path / "site" / "animeface"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(FAKE_ANIMEFACE)
    return folder.parent


def test_animeface_runs_in_a_python_of_its_own(tmp_path: Path, samples_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(fake_animeface(tmp_path)))
    bench = load_bench()
    image = min(samples_dir.glob("*.jpg"))
    worker = bench.AnimefaceWorker(sys.executable)
    try:
        boxes, scores = worker(image)
        assert worker.cpu_seconds() > 0
    finally:
        worker.close()
    assert worker.process.returncode == 0
    assert boxes.tolist() == [[10, 20, 10 + 848 // 4, 20 + 472 // 4]] and scores.tolist() == pytest.approx([0.9])


def test_animeface_here_is_left_out_with_a_pillow_it_cannot_read(tmp_path: Path, monkeypatch) -> None:
    import PIL

    monkeypatch.syspath_prepend(str(fake_animeface(tmp_path)))
    monkeypatch.delitem(sys.modules, "animeface", raising=False)
    monkeypatch.setattr(PIL, "__version__", "12.0.0")
    run, why = load_bench().animeface_here()
    assert run is None and "--animeface-python" in why and "12.0.0" in why
    monkeypatch.setattr(PIL, "__version__", "11.3.0")
    run, why = load_bench().animeface_here()
    assert run is not None and why == ""
