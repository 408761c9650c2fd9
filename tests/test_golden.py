"""Golden outputs: the shipped detector's boxes (interactive and ``--eval``) and AP50 on 8 dev
images stay what they were (tests/data/golden/README.md says how they were made)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

GOLDEN = Path(__file__).parent / "data" / "golden"
SHIPPED_WEIGHTS = Path(__file__).parents[1] / "src" / "acfd" / "weights" / "acfd-n.safetensors"
#: The CSV keeps two decimals: a value on a rounding edge may move by one hundredth.
BOX_TOL = 0.0101
SCORE_TOL = 2e-6


@pytest.fixture(scope="module")
def golden_images(det_data_dir: Path) -> list[Path]:
    names = [n for n in (GOLDEN / "images.txt").read_text().split() if n]
    return [det_data_dir / "images" / n for n in names]


def _run(args: list[str]) -> str:
    from acfd.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _read(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rows: dict[str, list[list[float]]] = defaultdict(list)
    with open(path, newline="") as f:
        for name, x1, y1, x2, y2, _face, score in csv.reader(f):
            rows[name].append([float(x1), float(y1), float(x2), float(y2), float(score)])
    return {k: (np.array(v)[:, :4], np.array(v)[:, 4]) for k, v in rows.items()}


def _assert_same(got_path: Path, want_path: Path) -> None:
    got, want = _read(got_path), _read(want_path)
    assert sorted(got) == sorted(want)
    for name, (boxes, scores) in want.items():
        g_boxes, g_scores = got[name]
        assert g_boxes.shape == boxes.shape, name
        np.testing.assert_allclose(g_scores, scores, atol=SCORE_TOL, rtol=0, err_msg=name)
        np.testing.assert_allclose(g_boxes, boxes, atol=BOX_TOL, rtol=0, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("mode,extra", [("default", []), ("eval", ["--eval"])])
def test_detect_gives_the_golden_boxes(golden_images: list[Path], tmp_path: Path, mode: str, extra: list[str]) -> None:
    out = tmp_path / f"{mode}.csv"
    _run(["detect", *golden_images, *extra, "-o", out, "--format", "csv", "--no-progress"])
    _assert_same(out, GOLDEN / f"detect_{mode}.csv")


@pytest.mark.slow
def test_eval_gives_the_golden_ap50(golden_images: list[Path], det_data_dir: Path, tmp_path: Path) -> None:
    report = tmp_path / "eval.json"
    _run(["eval", SHIPPED_WEIGHTS, "--gt", det_data_dir / "annotations" / "train.csv",
          "--images", det_data_dir / "images", "--split", GOLDEN / "images.txt", "--no-coco",
          "--json", report])
    got = json.loads(report.read_text())["official"]
    want = json.loads((GOLDEN / "eval.json").read_text())
    assert (got["num_det"], got["tp"]) == (want["num_det"], want["tp"])
    assert got["ap"] == pytest.approx(want["ap50"], abs=1e-6)
