"""``acfd train``: one-line errors before the trainer is built, nothing left behind (issue 10.8)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from acfd.cli import app

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def data(tmp_path: Path) -> list[str]:
    """key=value settings pointing at a tiny valid dataset."""
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "imgs" / "a.jpg")
    (tmp_path / "train.csv").write_text("a.jpg,1,1,30,30\n")
    return [f"images={tmp_path / 'imgs'}", f"annotations={tmp_path / 'train.csv'}", "train_split=null",
            "val_split=null", "model=acfd-tiny", f"output={tmp_path / 'run'}"]


def invoke(args: list[str]):  # noqa: ANN201
    return CliRunner().invoke(app, ["train", *[str(a) for a in args]])


def one_line(res, code: int = 1) -> str:  # noqa: ANN001
    assert res.exit_code == code, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def test_missing_shared_data_is_one_line_and_leaves_no_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    line = one_line(invoke(["--config", REPO / "configs" / "acfd-s.yaml", f"images={tmp_path / 'nope'}", "-o", out]))
    assert "nope: images folder not found" in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["epochs=abc"], "setting epochs='abc': expected int"),
        (["epochs=0"], "epochs=0: must be at least 1"),
        (["model=acfd-x"], "unknown model 'acfd-x'"),
        (["base_lr=-1"], "base_lr=-1: must be positive"),
        (["device=foo"], "unknown device"),
        (["nonsense=1"], "unknown training settings: nonsense"),
        (["threads=0"], "setting threads=0: must be at least 1"),  # issue 38 A5: a 45-line traceback
    ],
)
def test_bad_settings_are_one_line(data: list[str], tmp_path: Path, extra: list[str], words: str) -> None:
    assert words in one_line(invoke([*data, *extra]))
    assert not (tmp_path / "run").exists()


def test_a_malformed_recipe_is_one_line(tmp_path: Path) -> None:
    """Issue 38 A5: a malformed YAML recipe gave an 83-line traceback (acfd train and acfd recognize train)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nmodel: [acfd-n\n")
    line = one_line(invoke(["--config", bad]))
    assert line.startswith(f"error: {bad}: not valid YAML (line 3)")
    from acfd.recognition.train import load_recognition_config

    with pytest.raises(ValueError, match="bad.yaml: not valid YAML"):
        load_recognition_config(bad)
    bad.write_text("- epochs\n- 3\n")
    assert f"{bad}: expected a mapping of settings, got list" in one_line(invoke(["--config", bad]))


def test_bad_resume_files_are_one_line(data: list[str], tmp_path: Path) -> None:
    line = one_line(invoke([*data, "--resume", tmp_path / "nope.pt"]))
    assert "nope.pt: weights file not found" in line
    cut = tmp_path / "cut.pt"
    torch.save({"model": {"w": torch.zeros(1000)}}, cut)
    cut.write_bytes(cut.read_bytes()[:200])
    line = one_line(invoke([*data, "--resume", cut]))
    assert f"{cut}: not a readable checkpoint" in line
    assert not (tmp_path / "run").exists()


def test_unwritable_output_is_one_line(data: list[str], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    line = one_line(invoke([*data, "-o", tmp_path / "file" / "run"]))
    assert "output" in line and "is a file" in line


def test_a_failed_run_removes_the_folder_it_created(data: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from acfd.engine import train as train_mod

    def failing(cfg, resume=None):  # noqa: ANN001, ANN202
        Path(cfg.output).mkdir(parents=True)
        (Path(cfg.output) / "metrics.jsonl").write_text("")
        raise FileNotFoundError(2, "No such file or directory", "some/image.jpg")

    monkeypatch.setattr(train_mod, "train", failing)
    assert "some/image.jpg: file not found" in one_line(invoke(data))
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()  # a folder the user had: kept
    one_line(invoke(data))
    assert (tmp_path / "run").is_dir()
