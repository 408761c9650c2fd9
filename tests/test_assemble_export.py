"""``acfd assemble export``: never deletes what it did not write, and writes a dataset that stands on
its own (images included, video frames too); ``acfd assemble`` on Ctrl-C says how to resume."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from acfd.assemble import review
from acfd.assemble.export import export_project
from acfd.cli import app

from test_assemble import FACE, SIZE, _run, character, dataset  # noqa: F401 - the synthetic project fixture


@pytest.fixture
def project_dir(dataset: dict[str, Path]) -> Path:  # noqa: F811
    project, _ = _run(dataset)
    project.close()
    return dataset["project"]


def _export(*args: str) -> object:
    return CliRunner().invoke(app, ["assemble", "export", *args])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_export_refuses_a_folder_it_did_not_write(project_dir: Path, tmp_path: Path) -> None:
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "keep.txt").write_text("mine")
    result = _export(str(project_dir), "-o", str(unrelated))
    assert result.exit_code == 1 and "is not empty and not an earlier export of this project" in result.output
    assert (unrelated / "keep.txt").read_text() == "mine" and sorted(p.name for p in unrelated.iterdir()) == ["keep.txt"]


def test_export_refuses_the_project_parent_and_the_current_folder(
    project_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sibling = tmp_path / "sibling"
    sibling.mkdir()
    (sibling / "notes.txt").write_text("x")
    db_bytes = (project_dir / "project.db").stat().st_size
    result = _export(str(project_dir), "-o", str(tmp_path))
    assert result.exit_code == 1 and "holds the project folder" in result.output, result.output
    assert (project_dir / "project.db").stat().st_size == db_bytes and (sibling / "notes.txt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-built folder left
    for cwd in (project_dir, sibling, tmp_path / "empty"):
        cwd.mkdir(exist_ok=True)
        monkeypatch.chdir(cwd)
        result = _export(str(project_dir), "-o", ".")
        assert result.exit_code == 1 and "cannot be the current folder" in result.output, (cwd, result.output)
        assert "empty name" not in result.output
    assert (sibling / "notes.txt").is_file() and (project_dir / "project.db").is_file()
    result = _export(str(project_dir), "-o", str(project_dir))
    assert result.exit_code == 1 and "cannot be the project folder itself" in result.output


def test_export_replaces_only_its_own_earlier_export(project_dir: Path, dataset: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "dataset"
    assert _export(str(project_dir), "-o", str(out)).exit_code == 0
    first = json.loads((out / "manifest.json").read_text())
    assert first["format"] == "acfd-assemble-export/1" and first["project"] == str(project_dir.resolve())
    assert _export(str(project_dir), "-o", str(out)).exit_code == 0  # an earlier export of the project: replaced
    (out / "images" / "my_notes.txt").write_text("keep")
    result = _export(str(project_dir), "-o", str(out))
    assert result.exit_code == 1 and "holds images/my_notes.txt, which the earlier export did not write" in result.output
    assert (out / "images" / "my_notes.txt").read_text() == "keep" and (out / "manifest.json").is_file()
    (out / "images" / "my_notes.txt").unlink()
    # another project's export is not this project's
    other = dict(dataset, project=tmp_path / "other_project")
    project, _ = _run(other)
    with pytest.raises(ValueError, match="not an earlier export of this project"):
        export_project(project, out)
    project.close()
    assert (out / "manifest.json").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".dataset")]


def test_export_is_a_self_contained_dataset(dataset: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    video = dataset["src"] / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 2.0, (SIZE, SIZE))
    for i in range(4):
        writer.write(character(4, i)[..., ::-1])
    writer.release()
    (dataset["src"] / "sub").mkdir()
    cv2.imwrite(str(dataset["src"] / "sub" / "d1.png"), character(5, 1)[..., ::-1])
    with open(dataset["boxes"], "a") as f:
        f.write(f"clip.avi,{','.join(map(str, FACE))}\n")
        f.write(f"sub/d1.png,{','.join(map(str, FACE))}\n")
    project, _ = _run(dataset)
    project.close()
    out = tmp_path / "out"
    result = _export(str(dataset["project"]), "-o", str(out))
    assert result.exit_code == 0, result.output
    rows = (out / "boxes.csv").read_text().splitlines()
    names = {r.rsplit(",", 4)[0] for r in rows}
    assert all((out / "images" / n).is_file() for n in names), names
    assert {"frames/s8_f0000000.jpg", "frames/s8_f0000002.jpg", "sub/d1.png", "a1.png"} <= names, names  # clip.avi: source 8
    assert not any("#frame=" in n for n in names)
    check = CliRunner().invoke(app, ["data", "check", str(out / "boxes.csv"), "--images", str(out / "images")])
    assert check.exit_code == 0 and "0 errors" in check.output, check.output
    manifest = json.loads((out / "manifest.json").read_text())
    video_face = next(e for e in manifest["faces"] if e["source_kind"] == "video")
    assert video_face["image"] == "clip.avi#frame=000000" and video_face["image_file"] == "images/frames/s8_f0000000.jpg"
    assert set(manifest["files"]) >= {"boxes.csv", "images/a1.png", "images/frames/s8_f0000000.jpg"}
    expected = 0o777 & ~_umask()
    for folder in (out, out / "images", out / "images" / "frames", out / "unreviewed"):
        assert stat.S_IMODE(folder.stat().st_mode) == expected, folder


def test_export_reports_source_images_it_cannot_copy(dataset: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    project, _ = _run(dataset)
    project.close()
    (dataset["src"] / "b2.png").unlink()  # a source image moved away after the pipeline ran
    out = tmp_path / "out"
    result = _export(str(dataset["project"]), "-o", str(out))
    assert result.exit_code == 1 and "1 image(s) with boxes could not be copied" in result.output and "b2.png" in result.output
    rows = (out / "boxes.csv").read_text().splitlines()
    assert rows and not any(r.startswith("b2.png,") for r in rows) and any(r.startswith("a1.png,") for r in rows)
    assert json.loads((out / "manifest.json").read_text())["images_missing"][0]["image"] == "b2.png"


def test_assemble_ctrl_c_says_what_is_saved_and_how_to_resume(
    dataset: dict[str, Path], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    import acfd.assemble.pipeline as pipeline

    def interrupted(*args: object, **kwargs: object) -> list:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_pipeline", interrupted)
    args = ["assemble", str(dataset["src"]), "-o", str(dataset["project"]), "--boxes", str(dataset["boxes"]),
            "--references", str(dataset["refs"]), "--features", "pixels", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 130, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and str(dataset["project"] / "project.db") in lines[0]
    assert "run the same command again to resume" in lines[0]
    monkeypatch.undo()
    assert CliRunner().invoke(app, args).exit_code == 0  # and it resumes


def test_export_of_an_unused_name_leaves_no_folder(project_dir: Path, tmp_path: Path) -> None:
    """A name whose only answers were undone is not in the export (no empty folder, not in the manifest)."""
    from acfd.assemble.project import Project

    with Project(project_dir) as project:
        c = next(g for g in review.groups(project.db) if g["kind"] == "cluster")
        review.record_answer(project.db, "ann", c["face_ids"], "yes", name="CON", kind="group")
        review.undo_last(project.db, "ann")
        export_project(project, tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "CON" not in manifest["identities"].values() and not (tmp_path / "out" / "identities" / "CON").exists()
