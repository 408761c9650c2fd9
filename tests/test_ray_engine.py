"""``acfd detect --engine ray``: Ray Data actors give the local engine's results, failures and all."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from acfd.models.registry import create_model  # noqa: E402
from acfd.predict.batch import run_detection  # noqa: E402
from acfd.predict.detector import Detector  # noqa: E402
from acfd.predict.modelfile import save_weights  # noqa: E402
from acfd.predict.ray_engine import run_detection_ray  # noqa: E402
from acfd.predict.sources import collect_inputs  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    """One small local Ray for the module (2 CPUs), shut down afterwards."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """acfd-tiny weights in a file, so every actor loads the same model."""
    import torch

    torch.manual_seed(0)
    return save_weights(create_model("acfd-tiny"), tmp_path_factory.mktemp("w") / "tiny.safetensors")


@pytest.fixture
def inputs(samples_dir, tmp_path):
    """The sample images plus one corrupt file, as collect_inputs gives them."""
    folder = tmp_path / "in"
    folder.mkdir()
    for jpg in sorted(samples_dir.glob("*.jpg")):
        shutil.copy(jpg, folder / jpg.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    items, failures = collect_inputs([str(folder)])
    assert not failures and len(items) == 6
    return items


@pytest.fixture
def one_thread():
    """The local run with one torch thread, as each Ray actor (float sums depend on the thread count)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _kwargs(weights):
    return dict(model="acfd-tiny", weights=weights, scales=("256",), score_thresh=0.0, backend="torch")


def _assert_same(ray_run, local_run):
    assert [k for k, _ in ray_run.results] == [k for k, _ in local_run.results]
    for (_, a), (_, b) in zip(ray_run.results, local_run.results):
        assert a.image_size == b.image_size and len(a) == len(b) > 0
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_ray_matches_local_reports_the_bad_file_and_survives_a_killed_worker(
    local_ray, tiny_weights, inputs, tmp_path, one_thread
):
    """One Ray run (they cost seconds each on 2 cores): an actor is killed on its first batch,
    Ray restarts it and re-runs the task, and the result still equals the local engine's, row
    for row, with the corrupt file reported and nothing lost or duplicated."""
    marker = tmp_path / "killed-once"
    # batch size 1: which images share a network call differs between the engines, and a batch
    # of two is not bit-identical to two single calls in oneDNN (last-digit float differences)
    local = run_detection(Detector(**_kwargs(tiny_weights)), inputs, progress=False)
    on_ray = run_detection_ray(
        inputs, _kwargs(tiny_weights), rows_per_task=2, num_actors=1, progress=False,
        _fault_marker=str(marker),
    )
    assert marker.exists()  # an actor really died mid-run
    _assert_same(on_ray, local)
    assert len(on_ray.results) == 5  # every readable image once: none lost, none duplicated
    assert len(on_ray.failures) == 1 and on_ray.failures[0][0].endswith("broken.jpg")
    assert on_ray.failures == local.failures


def test_cli_engine_ray_writes_the_local_submission(tiny_weights, inputs, tmp_path, monkeypatch):
    """The CLI wiring (the Ray run itself is tested above): same writer, same file, --address passed on."""
    from typer.testing import CliRunner

    import acfd.predict.ray_engine as ray_engine
    from acfd.cli import app

    seen = {}

    def fake_ray(items, detector_kwargs, **kwargs):
        seen.update(kwargs, detector_kwargs=detector_kwargs)
        return run_detection(Detector(**detector_kwargs), items, progress=False)

    monkeypatch.setattr(ray_engine, "run_detection_ray", fake_ray)
    folder = str(inputs[0].path.parent)
    args = ["detect", folder, "--model", "acfd-tiny", "--weights", str(tiny_weights), "--scales", "256",
            "--score-thresh", "0.0", "--no-progress"]
    local = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "local.csv")])
    on_ray = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "ray.csv"), "--engine", "ray", "--address", "auto"])
    assert local.exit_code == on_ray.exit_code == 1, (local.output, on_ray.output)  # 1: the corrupt file
    assert seen["address"] == "auto" and seen["detector_kwargs"]["score_thresh"] == 0.0
    assert "broken.jpg" in on_ray.output
    assert (tmp_path / "ray.csv").read_text() == (tmp_path / "local.csv").read_text()
    bad = CliRunner().invoke(app, [*args, "--engine", "spark"])
    assert bad.exit_code == 2 and "local or ray" in bad.output
    no_save = CliRunner().invoke(app, [*args, "--engine", "ray", "--save-images", str(tmp_path / "out")])
    assert no_save.exit_code == 2 and "--save-images is not supported" in no_save.output


def test_assemble_detect_stage_on_ray_stores_the_local_faces(local_ray, tiny_weights, samples_dir, tmp_path, one_thread):
    """``acfd assemble --engine ray``: the detect stage on Ray actors stores the same faces (boxes,
    scores, statuses) as the local stage, and a frame that became unreadable gets its error."""
    from acfd.assemble import stages
    from acfd.assemble.config import AssembleConfig
    from acfd.assemble.project import Project

    src = tmp_path / "src"
    src.mkdir()
    for jpg in sorted(samples_dir.glob("*.jpg"))[:3]:
        shutil.copy(jpg, src / jpg.name)
    victim = sorted(src.glob("*.jpg"))[-1]
    victim_bytes = victim.read_bytes()
    faces = {}
    for engine in ("local", "ray"):
        project = Project(tmp_path / engine, create=True)
        cfg = project.settle_config(AssembleConfig(), {})
        stages.ingest(project, [str(src)], cfg, progress=False)
        victim.write_bytes(b"\xff\xd8\xff gone bad after ingest")
        if engine == "local":
            report = stages.detect(project, stages.detector_finder(Detector(**_kwargs(tiny_weights))), cfg,
                                   batch_size=1, progress=False)
        else:
            report = stages.detect_on_ray(project, stages.RayDetection(_kwargs(tiny_weights)), cfg,
                                          batch_size=1, progress=False)
        victim.write_bytes(victim_bytes)
        assert report.n_in == 3 and report.kept == 2 and report.dropped == {"unreadable": 1}
        faces[engine] = project.db.query(
            "SELECT fr.key, f.x1, f.y1, f.x2, f.y2, f.score, f.status FROM faces f"
            " JOIN frames fr ON fr.id = f.frame_id ORDER BY fr.key, f.id")
        errors = project.db.query("SELECT key, error FROM frames WHERE error IS NOT NULL")
        assert [r["key"] for r in errors] == [victim.name] and errors[0]["error"]
        assert project.db.scalar("SELECT COUNT(*) FROM frames WHERE detected = 0 AND error IS NULL") == 0
        project.close()
    assert len(faces["local"]) > 0
    assert [tuple(r) for r in faces["ray"]] == [tuple(r) for r in faces["local"]]


def test_assemble_cli_engine_ray_is_wired(tiny_weights, samples_dir, tmp_path, monkeypatch):
    """``acfd assemble --engine ray --address A``: the detect stage gets a RayDetection with the
    detector settings and the address (the Ray run itself is tested above); bad combinations are one line."""
    from typer.testing import CliRunner

    from acfd.assemble import stages
    from acfd.assemble.config import AssembleConfig
    from acfd.cli import app

    seen = {}

    def fake_detect_on_ray(project, ray_detection, cfg, batch_size=4, progress=True):
        seen["ray_detection"] = ray_detection
        return stages.detect(project, stages.detector_finder(Detector(**ray_detection.detector_kwargs)), cfg,
                             batch_size=batch_size, progress=False)

    monkeypatch.setattr(stages, "detect_on_ray", fake_detect_on_ray)
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(sorted(samples_dir.glob("*.jpg"))[0], src)
    args = ["assemble", str(src), "--model", "acfd-tiny", "--weights", str(tiny_weights), "--scales", "256",
            "--features", "pixels", "--no-progress"]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "p"), "--engine", "ray", "--address", "auto"])
    assert result.exit_code == 0, result.output
    assert seen["ray_detection"].address == "auto"
    assert seen["ray_detection"].detector_kwargs["model"] == "acfd-tiny"
    assert seen["ray_detection"].detector_kwargs["score_thresh"] == AssembleConfig().score_thr
    bad = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "q"), "--engine", "spark"])
    assert bad.exit_code == 2 and "'local' or 'ray'" in bad.output
    both = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "r"), "--engine", "ray", "--boxes", str(tmp_path / "b.csv")])
    assert both.exit_code == 2 and "nothing to detect" in both.output
