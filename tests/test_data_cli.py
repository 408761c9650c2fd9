"""``acfd data ...`` through CliRunner, on a private Typer app (other command modules may not exist)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from acfd.cli.data_cmd import register

runner = CliRunner()


@pytest.fixture()
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # keeps "data" a group
        pass

    register(app)
    return app


@pytest.fixture()
def data(tmp_path: Path) -> tuple[Path, Path]:
    """images/ (a.jpg 60x40, b.jpg 50x50) and a clean training CSV."""
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (60, 40), (255, 0, 0)).save(images / "a.jpg")
    Image.new("RGB", (50, 50), (0, 0, 255)).save(images / "b.jpg")
    csv = tmp_path / "train.csv"
    csv.write_text("a.jpg,1,2,30,40\na.jpg,10,5,20,15\nb.jpg,0,0,50,25\n")
    return csv, images


def test_help_lists_commands(app: typer.Typer) -> None:
    result = runner.invoke(app, ["data", "--help"])
    assert result.exit_code == 0
    for cmd in ("convert", "check", "stats", "preview"):
        assert cmd in result.output


def test_convert_round_trip_through_all_formats(app: typer.Typer, data: tuple[Path, Path], tmp_path: Path) -> None:
    csv, images = data
    steps = [
        (csv, tmp_path / "c.json", "icartoon", "coco"),
        (tmp_path / "c.json", tmp_path / "voc", "coco", "voc"),
        (tmp_path / "voc", tmp_path / "yolo", "voc", "yolo"),
        (tmp_path / "yolo", tmp_path / "back.csv", "yolo", "icartoon"),
    ]
    for src, dst, a, b in steps:
        result = runner.invoke(
            app, ["data", "convert", str(src), str(dst), "--from", a, "--to", b, "--images", str(images)]
        )
        assert result.exit_code == 0, result.output
        assert "wrote 3 boxes on 2 images" in result.output
    coco = json.loads((tmp_path / "c.json").read_text())
    assert [im["width"] for im in coco["images"]] == [60, 50]
    assert (tmp_path / "back.csv").read_text() == csv.read_text()


def test_convert_guesses_formats(app: typer.Typer, data: tuple[Path, Path], tmp_path: Path) -> None:
    csv, images = data
    result = runner.invoke(app, ["data", "convert", str(csv), str(tmp_path / "x.json"), "--images", str(images)])
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "x.json").read_text())["annotations"]) == 3


def test_convert_reports_bad_rows(app: typer.Typer, data: tuple[Path, Path], tmp_path: Path) -> None:
    _, images = data
    bad = tmp_path / "bad.csv"
    bad.write_text("a.jpg,1,2,30,40\na.jpg,9,9,1,1\nb.jpg,0,0,70,25\n")
    out = tmp_path / "o.csv"
    result = runner.invoke(app, ["data", "convert", str(bad), str(out), "--images", str(images), "--clip"])
    assert result.exit_code == 0
    assert f"{bad}:2: error: empty box" in result.stderr
    assert f"{images / 'b.jpg'}: warning: 1 box(es) extend outside the 50x50 image; clipped" in result.stderr
    assert "wrote 2 boxes on 2 images" in result.stdout
    assert out.read_text() == "a.jpg,1,2,30,40\nb.jpg,0,0,50,25\n"
    result = runner.invoke(app, ["data", "convert", str(bad), str(out), "--strict"])
    assert result.exit_code == 1


def test_convert_errors(app: typer.Typer, data: tuple[Path, Path], tmp_path: Path) -> None:
    csv, _ = data
    result = runner.invoke(app, ["data", "convert", str(csv), str(tmp_path / "o"), "--to", "pdf"])
    assert result.exit_code == 1 and "error: unknown annotation format 'pdf'" in result.stderr
    result = runner.invoke(app, ["data", "convert", str(tmp_path / "none.csv"), str(tmp_path / "o.json")])
    assert result.exit_code == 1 and "none.csv: file not found" in result.stderr
    result = runner.invoke(app, ["data", "convert", str(csv), str(tmp_path / "o.json")])  # coco needs sizes
    assert result.exit_code == 1 and "pass the images folder" in result.stderr
    assert not (tmp_path / "o.json").exists()


def test_check_clean_and_broken(app: typer.Typer, data: tuple[Path, Path], tmp_path: Path) -> None:
    csv, images = data
    result = runner.invoke(app, ["data", "check", str(csv), "--images", str(images)])
    assert result.exit_code == 0, result.output
    assert "2 annotated images, 3 boxes, 2 images read: 0 errors, 0 warnings, 0 info" in result.stdout

    bad = tmp_path / "bad.csv"
    bad.write_text("a.jpg,1,2,30,40\r\nmissing.jpg,1,1,5,5\r\na.jpg,x,1,5,5\r\n")
    split = tmp_path / "split.txt"
    split.write_text("a.jpg\nb.jpg\n")
    result = runner.invoke(app, ["data", "check", str(bad), "--images", str(images), "--split", str(split)])
    assert result.exit_code == 1
    assert f"{bad}:3: error: non-numeric coordinate(s) ['x']; row dropped" in result.output
    assert f"{images / 'missing.jpg'}: error: file not found" in result.output
    assert f"{split}:2: info: b.jpg: no annotation entry" in result.output
    assert "2 errors, 0 warnings, 1 info" in result.stdout


def test_stats(app: typer.Typer, data: tuple[Path, Path], tmp_path: Path) -> None:
    csv, images = data
    out = tmp_path / "stats"
    result = runner.invoke(app, ["data", "stats", str(csv), "--out", str(out), "--images", str(images)])
    assert result.exit_code == 0, result.output
    assert "images: 2 (2 with faces)" in result.stdout
    assert "faces: 3 (1.50 per image, max 2)" in result.stdout
    assert "aspect h/w:" in result.stdout
    for name in ("faces_per_image.png", "face_size.png", "aspect_ratio.png", "relative_face_size.png"):
        assert (out / name).is_file()
    assert json.loads((out / "stats.json").read_text())["num_faces"] == 3


def test_stats_missing_file(app: typer.Typer, tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "stats", str(tmp_path / "x.csv"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "file not found" in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("acfd.data.preview") is None, reason="acfd.data.preview not written yet")
def test_preview(app: typer.Typer, data: tuple[Path, Path], tmp_path: Path) -> None:
    csv, images = data
    out = tmp_path / "p.png"
    result = runner.invoke(
        app, ["data", "preview", str(csv), "--images", str(images), "--out", str(out), "--n", "2", "--size", "64"]
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout
    with Image.open(out) as im:
        assert im.format == "PNG"


# --- hardening (issue 10) ---------------------------------------------------------------------


def test_unwritable_outputs_are_one_line_errors(app: typer.Typer, data: tuple[Path, Path], tmp_path: Path) -> None:
    """Issue 10.9: data stats --out, data convert, data preview into unwritable places: tracebacks."""
    csv, images = data
    (tmp_path / "file").write_text("x")
    blocked = tmp_path / "file" / "x"
    cases = [
        ["data", "stats", str(csv), "--out", str(blocked)],
        ["data", "convert", str(csv), str(blocked) + ".csv"],
        ["data", "preview", str(csv), "--images", str(images), "--out", str(blocked) + ".png"],
        ["data", "stats", str(csv), "--out", str(tmp_path / "file")],
    ]
    for args in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
        assert result.exception is None or isinstance(result.exception, SystemExit)
    result = runner.invoke(app, ["data", "convert", str(csv), str(csv)])
    assert result.exit_code == 1 and "would overwrite the input" in result.stderr


def test_empty_annotation_file_is_an_error(app: typer.Typer, data: tuple[Path, Path], tmp_path: Path) -> None:
    """Issue 10.17: an empty file passed data check (exit 0) and data stats drew empty plots."""
    _, images = data
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    result = runner.invoke(app, ["data", "check", str(empty), "--images", str(images)])
    assert result.exit_code == 1 and "no annotated face" in result.output
    result = runner.invoke(app, ["data", "stats", str(empty), "--out", str(tmp_path / "plots")])
    assert result.exit_code == 1 and "nothing to plot" in result.stderr
    assert not (tmp_path / "plots").exists()


def test_face_size_plot_has_readable_ticks_and_explains_the_dashed_lines(
    data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10.18: overlapping log-axis tick labels and unexplained dashed lines."""
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib not installed")
    from acfd.data import stats
    from acfd.data.formats import read_icartoon_csv

    figs = {}
    monkeypatch.setattr(stats, "_save", lambda fig, path: figs.setdefault(path.name, fig) and path)
    csv, _ = data
    records, _ = read_icartoon_csv(csv)
    stats.plot_stats(records, tmp_path / "plots")
    ax = figs["face_size.png"].axes[0]
    figs["face_size.png"].canvas.draw()
    minor = [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]
    assert minor == []
    major = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert major and all("$" not in t for t in major)  # plain numbers, not 10^x mathtext
    legend = ax.get_legend()
    assert legend is not None and any("size groups" in t.get_text() for t in legend.get_texts())
