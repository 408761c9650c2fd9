"""Training engine on the shipped samples (tiny model, tiny inputs, CPU)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from acfd.engine.train import (
    ResumableSampler,
    TrainConfig,
    Trainer,
    load_train_config,
    lr_factor,
    train,
)

REPO = Path(__file__).resolve().parents[1]


def _cfg(tmp_path: Path, **kw) -> TrainConfig:
    base = dict(
        model="acfd-tiny",
        images=str(REPO / "samples"),
        annotations=str(REPO / "samples" / "annotations.csv"),
        train_split=None,
        val_split=None,
        input_size=128,
        batch_size=2,
        workers=0,
        epochs=2,
        warmup_iters=2,
        milestones=[100],
        eval_every=0,
        output=str(tmp_path / "run"),
        progress=False,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)


def test_overfits_four_images(tmp_path):
    # classic matching: DAM's compensated anchors (normalised by their own small count) make the
    # first iterations of a from-scratch run noisy, which is not what this test is about
    cfg = _cfg(tmp_path, augment=False, epochs=40, batch_size=4, base_lr=0.01, base_batch_size=4,
               warmup_iters=5, log_every=1, model_overrides={"match.dynamic": False})
    trainer = Trainer(cfg)
    trainer.dataset.names = trainer.dataset.names[:4]
    trainer.sampler.size = 4
    trainer.sampler.per_rank = 4
    trainer.iters_per_epoch = 1
    trainer.fit()
    losses = [r["loss"] for r in trainer.history if r["type"] == "train"]
    assert len(losses) == 40
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.3 * first, (first, last)


def test_resume_gives_identical_weights(tmp_path):
    straight = Trainer(_cfg(tmp_path / "a"))
    straight.fit()
    # 1 epoch, stop, resume for the second epoch
    first = Trainer(_cfg(tmp_path / "b", max_iters=straight.iters_per_epoch))
    first.fit()
    assert first.epoch == 1
    resumed = Trainer(_cfg(tmp_path / "b"), resume="auto")
    assert resumed.epoch == 1 and resumed.iteration == straight.iters_per_epoch
    resumed.fit()
    # mid-epoch stop and resume
    mid = Trainer(_cfg(tmp_path / "c", max_iters=1))
    mid.fit()
    assert mid.step_in_epoch == 1
    mid2 = Trainer(_cfg(tmp_path / "c"), resume=tmp_path / "c" / "run" / "last.pt")
    mid2.fit()
    for other in (resumed, mid2):
        for (k, a), b in zip(straight.model.state_dict().items(), other.model.state_dict().values()):
            assert torch.equal(a, b), k
    assert (tmp_path / "a" / "run" / "last.safetensors").is_file()
    lines = (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines()
    assert any(json.loads(line)["type"] == "epoch" for line in lines)


def test_lr_schedule_warmup_then_steps():
    cfg = TrainConfig(warmup_iters=10, warmup_start_lr=1e-6, milestones=[3, 5], lr_gamma=0.1)
    peak = 0.04
    assert lr_factor(0, 5, cfg, peak) * peak == pytest.approx(1e-6)
    assert lr_factor(5, 5, cfg, peak) == pytest.approx(0.5 + 0.5 * 1e-6 / peak, rel=1e-3)
    assert lr_factor(10, 5, cfg, peak) == 1.0  # warm-up done, epoch 2
    assert lr_factor(15, 5, cfg, peak) == pytest.approx(0.1)  # epoch 3: first milestone
    assert lr_factor(25, 5, cfg, peak) == pytest.approx(0.01)


def test_sampler_splits_ranks_and_resumes():
    s0, s1 = ResumableSampler(7, seed=3, rank=0, world_size=2), ResumableSampler(7, seed=3, rank=1, world_size=2)
    a, b = s0.indices(), s1.indices()
    assert len(a) == len(b) == 4 and set(a) | set(b) == set(range(7))
    s0.set_epoch(0, start=2)
    assert list(s0) == a[2:] and len(s0) == 2
    s0.set_epoch(1)
    assert s0.indices() != a


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: acfd-n\nepochs: 3\nmilestones: [1, 2]\n")
    cfg = load_train_config(path, ["batch_size=8", "model_overrides.loss.margin=0.3", "amp=none"])
    assert (cfg.model, cfg.epochs, cfg.batch_size, cfg.milestones, cfg.amp) == ("acfd-n", 3, 8, [1, 2], "none")
    assert cfg.model_overrides == {"loss.margin": 0.3}
    with pytest.raises(ValueError, match="unknown training settings: nope"):
        load_train_config(path, ["nope=1"])
    with pytest.raises(FileNotFoundError):
        load_train_config(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="batch_size must be at least 2"):
        load_train_config(path, ["batch_size=1"])
    for shipped in (REPO / "configs").glob("*.yaml"):
        load_train_config(shipped)


def test_distributed_two_processes_gloo(tmp_path):
    cfg_path = tmp_path / "ddp.yaml"
    cfg_path.write_text(
        "\n".join(
            [
                "model: acfd-tiny",
                f"images: {REPO / 'samples'}",
                f"annotations: {REPO / 'samples' / 'annotations.csv'}",
                "train_split: null",
                "val_split: null",
                "input_size: 128",
                "batch_size: 2",
                "workers: 0",
                "epochs: 1",
                "warmup_iters: 1",
                "eval_every: 0",
                "device: cpu",
                "progress: false",
                f"output: {tmp_path / 'run'}",
            ]
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
         "-m", "acfd.engine.train", "--config", str(cfg_path)],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    # 5 samples over 2 ranks -> 3 per rank, batch 2 (per rank, drop_last) -> 1 iteration each
    assert ckpt["iteration"] == 1 and ckpt["epoch"] == 1


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    cfg_path = tmp_path / "long.yaml"
    run = tmp_path / "run"
    cfg_path.write_text(
        "\n".join(
            [
                "model: acfd-tiny",
                f"images: {REPO / 'samples'}",
                f"annotations: {REPO / 'samples' / 'annotations.csv'}",
                "train_split: null", "val_split: null", "input_size: 128", "batch_size: 2",
                "workers: 0", "epochs: 100000", "save_every: 100000", "eval_every: 0", "log_every: 1",
                "device: cpu", "progress: false", f"output: {run}",
            ]
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "acfd.engine.train", "--config", str(cfg_path)],
                            stderr=subprocess.PIPE, text=True, env=env)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "saving a checkpoint" in err
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert ckpt["iteration"] >= 1


def test_training_evaluation_is_single_view_with_the_papers_nms(tmp_path, monkeypatch):
    # in-training dev figures stay comparable across runs: no test-time flip, NMS 0.55, cfg's scales
    from acfd.engine import train as train_module

    split = tmp_path / "val.txt"
    split.write_text("\n".join(sorted(p.name for p in (REPO / "samples").glob("*.jpg"))[:2]) + "\n")
    seen = {}

    def fake_evaluate_model(model, images, gt, names, **kwargs):
        seen.update(kwargs, names=list(names))
        return type("Ev", (), {"ap50": 0.25})()

    monkeypatch.setattr(train_module, "evaluate_model", fake_evaluate_model)
    trainer = Trainer(_cfg(tmp_path, val_split=str(split), eval_scales=["256"]))
    assert trainer.evaluate() == 0.25
    assert (seen["flip"], seen["nms_thresh"], seen["scales"]) == (False, 0.55, ["256"])
    assert len(seen["names"]) == 2
