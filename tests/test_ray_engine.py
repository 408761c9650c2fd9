"""``acfd detect --engine ray``: Ray Data actors give the local engine's results, failures and all."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from acfd.cli.detect_cmd import collect_inputs, run_detection  # noqa: E402
from acfd.engine.infer import Detector  # noqa: E402
from acfd.engine.ray_engine import run_detection_ray  # noqa: E402
from acfd.models.registry import create_model, save_weights  # noqa: E402


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

    import acfd.engine.ray_engine as ray_engine
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
