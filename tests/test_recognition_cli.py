"""`acfd recognize eval`, `acfd gallery add/list`, `acfd identify` and recognition training, on tiny
synthetic folders (no shared data needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from acfd.cli import app
from acfd.recognition.gallery import Gallery
from acfd.recognition.model import EmbedderConfig, EmbeddingNet, save_embedder
from acfd.recognition.train import (
    RecognitionTrainer,
    domain_adaptation_loss,
    load_recognition_config,
    train_recognition,
    uir_loss,
)

runner = CliRunner()
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def _identity_folder(root, per_identity: int = 4, size: int = 32, colours=COLOURS, seed: int = 0):
    rng = np.random.default_rng(seed)
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(per_identity):
            img = np.clip(np.array(colour) + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)
            img[: size // 4] = rng.integers(0, 255, 3)  # a varying band: images differ
            Image.fromarray(img).save(root / name / f"{name}_{i}.png")
    return root


def _weights(tmp_path, seed: int = 0):
    torch.manual_seed(seed)
    net = EmbeddingNet(EmbedderConfig(backbone="resnet10t", embedding_dim=8, input_size=32, unknown_threshold=-1.0))
    return save_embedder(net.eval(), tmp_path / f"w{seed}.safetensors")


# --- recognize eval ----------------------------------------------------------------------------


def test_eval_pixels_prints_the_protocol_lines_and_writes_json_and_plots(tmp_path) -> None:
    root = _identity_folder(tmp_path / "ids")
    (tmp_path / "dist").mkdir()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(tmp_path / "dist" / "grey.png")
    res = runner.invoke(app, ["recognize", "eval", str(root), "--features", "pixels", "--distractors", str(tmp_path / "dist"),
                              "--json", str(tmp_path / "r.json"), "--plots", str(tmp_path / "plots")])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "rank1 100.00" and lines[1] == "rank5 100.00"
    assert any(ln.startswith("verification accuracy 100.00") for ln in lines)
    assert "AUC 1.0000" in lines
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["rank1"] == 1.0 and data["num_distractors"] == 1 and len(data["verification"]["fold_accuracies"]) == 10
    assert (tmp_path / "plots" / "cmc.png").stat().st_size > 0 and (tmp_path / "plots" / "roc.png").is_file()


def test_eval_bad_folders_give_one_line(tmp_path) -> None:
    one = _identity_folder(tmp_path / "one", colours={"red": (200, 0, 0)})
    res = runner.invoke(app, ["recognize", "eval", str(one), "--features", "pixels"])
    assert res.exit_code == 1 and "need at least 2" in res.output and "Traceback" not in res.output
    single = _identity_folder(tmp_path / "single", per_identity=1)
    res = runner.invoke(app, ["recognize", "eval", str(single), "--features", "pixels"])
    assert res.exit_code == 1 and "at least 2" in res.output


def test_eval_skips_unreadable_images(tmp_path) -> None:
    root = _identity_folder(tmp_path / "ids")
    (root / "red" / "broken.jpg").write_bytes(b"not an image")
    res = runner.invoke(app, ["recognize", "eval", str(root), "--features", "pixels"])
    assert res.exit_code == 0, res.output
    assert "broken.jpg" in res.output and "rank1 100.00" in res.output


# --- gallery / identify ------------------------------------------------------------------------


def test_gallery_add_list_identify_with_boxes(tmp_path) -> None:
    ids = _identity_folder(tmp_path / "ids")
    weights = _weights(tmp_path)
    g = tmp_path / "chars.gallery"
    for name in COLOURS:
        res = runner.invoke(app, ["gallery", "add", name, str(ids / name), "--gallery", str(g), "--weights", str(weights)])
        assert res.exit_code == 0, res.output
    assert "3 identities" in res.output
    listed = runner.invoke(app, ["gallery", "list", str(g)])
    assert "red\t4" in listed.output
    res = runner.invoke(app, ["gallery", "add", "red", str(ids / "red" / "red_0.png"), "--gallery", str(g), "--weights", str(weights), "--replace"])
    assert res.exit_code == 0 and "replaced 4" in res.output and len(Gallery.load(g)) == 9
    # a scene: a copy of one gallery crop pasted at a known box; identify with that box
    scene = np.zeros((100, 100, 3), np.uint8)
    scene[20:84, 20:84] = np.array(Image.open(ids / "green" / "green_1.png").resize((64, 64)))
    Image.fromarray(scene).save(tmp_path / "scene.png")
    (tmp_path / "boxes.csv").write_text("scene.png,36,36,68,68\n")  # r = 1 doubles it to 20..84
    out = tmp_path / "who.json"
    res = runner.invoke(app, ["identify", str(tmp_path / "scene.png"), "--gallery", str(g), "--weights", str(weights),
                              "--boxes", str(tmp_path / "boxes.csv"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    face = json.loads(out.read_text())["faces"][0]
    assert face["name"] == "green" and face["similarity"] > 0.99 and face["box"] == [36, 36, 68, 68]
    res = runner.invoke(app, ["identify", str(tmp_path / "scene.png"), "--gallery", str(g), "--weights", str(weights),
                              "--boxes", str(tmp_path / "boxes.csv"), "--threshold", "1.01"])
    assert " unknown " in res.output


def test_identify_uses_the_detector(tmp_path, monkeypatch) -> None:
    from acfd.cli import gallery_cmd

    ids = _identity_folder(tmp_path / "ids")
    weights = _weights(tmp_path)
    g = tmp_path / "g.gallery"
    runner.invoke(app, ["gallery", "add", "blue", str(ids / "blue"), "--gallery", str(g), "--weights", str(weights)])

    class FakeDetector:
        def __call__(self, image):
            return type("D", (), {"boxes": np.array([[8.0, 8.0, 24.0, 24.0], [0.0, 0.0, 4.0, 4.0]])})()

    monkeypatch.setattr(gallery_cmd, "make_detector", lambda device: FakeDetector())
    res = runner.invoke(app, ["identify", str(ids / "blue" / "blue_2.png"), "--gallery", str(g), "--weights", str(weights)])
    assert res.exit_code == 0, res.output
    rows = [ln for ln in res.output.splitlines() if ln.startswith(str(ids))]
    assert len(rows) == 2 and rows[0].split()[1] == "8,8,24,24" and rows[0].split()[2] == "blue"


def test_gallery_refuses_another_model_and_empty_gallery(tmp_path) -> None:
    ids = _identity_folder(tmp_path / "ids")
    g = tmp_path / "g.gallery"
    runner.invoke(app, ["gallery", "add", "red", str(ids / "red"), "--gallery", str(g), "--weights", str(_weights(tmp_path, 0))])
    before = g.read_bytes()
    res = runner.invoke(app, ["gallery", "add", "blue", str(ids / "blue"), "--gallery", str(g), "--weights", str(_weights(tmp_path, 1))])
    assert res.exit_code == 1 and "built with model w0@" in res.output and len(res.output.strip().splitlines()) == 1
    assert g.read_bytes() == before
    res = runner.invoke(app, ["identify", str(ids / "red"), "--gallery", str(g), "--weights", str(_weights(tmp_path, 1))])
    assert res.exit_code == 1 and "not w1@" in res.output
    empty = tmp_path / "empty.gallery"
    Gallery.create(empty, 8, "x").save()
    res = runner.invoke(app, ["identify", str(ids / "red"), "--gallery", str(empty), "--weights", str(_weights(tmp_path, 0))])
    assert res.exit_code == 1 and "empty" in res.output


# --- training --------------------------------------------------------------------------------


def test_uir_and_domain_losses() -> None:
    assert float(uir_loss(torch.zeros(3, 5))) == pytest.approx(np.log(5), rel=1e-5)  # uniform: its minimum
    assert float(uir_loss(torch.tensor([[10.0, 0, 0, 0, 0]]))) > np.log(5)
    confused = domain_adaptation_loss(torch.zeros(4, 1), torch.tensor([1, 1, 0, 0]))
    sure = domain_adaptation_loss(torch.tensor([[9.0], [9.0], [-9.0], [-9.0]]), torch.tensor([1, 1, 0, 0]))
    assert float(confused) == pytest.approx(1 / np.log(2), rel=1e-5) and float(sure) > float(confused)


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["intra", "mtda"])  # mtda covers inter's two heads; none is intra without humans
def test_training_runs_every_fusion_mode_and_resumes(tmp_path, fusion: str) -> None:
    cartoon = _identity_folder(tmp_path / "cartoon", per_identity=6, size=24, colours={**COLOURS, "yellow": (230, 220, 20)})
    human = _identity_folder(tmp_path / "human", per_identity=3, size=24, colours={"a": (90, 90, 90), "b": (160, 120, 80)}, seed=1)
    overrides = [f"data={cartoon}", f"human_data={human}", "dev_identities=[blue, yellow]", f"fusion={fusion}", "input_size=24",
                 "embedding_dim=8", "batch_size=8", "epochs=2", "progress=false", "head=arcface", f"output={tmp_path / 'run'}",
                 "max_iters=2", "warmup_iters=1"]
    weights = train_recognition(load_recognition_config(None, overrides))
    from acfd.recognition.embedder import Recognizer

    rec = Recognizer(weights)
    assert rec.embedding_dim == 8 and rec.input_size == 24
    records = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if r["type"] == "final"][0]
    assert 0 <= final["dev_rank1"] <= 1 and 0 <= final["dev_auc"] <= 1
    resumed = RecognitionTrainer(load_recognition_config(None, overrides), resume="auto")
    assert resumed.iteration == 2 and resumed.epoch * resumed.iters_per_epoch + resumed.step_in_epoch == 2


def test_training_config_errors() -> None:
    with pytest.raises(ValueError, match="unknown recognition training settings: colour"):
        load_recognition_config(None, ["colour=red"])
    with pytest.raises(ValueError, match="at least 2 dev identities"):
        load_recognition_config(None, ["dev_identities=[ame]"])
    with pytest.raises(ValueError, match="fusion must be one of"):
        load_recognition_config(None, ["fusion=blend"])


def test_recognize_crops_cuts_enlarged_faces_from_csv_boxes(tmp_path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    scene = np.zeros((80, 80, 3), np.uint8)
    scene[30:50, 30:50] = 255
    Image.fromarray(scene).save(images / "a.png")
    Image.fromarray(scene).save(images / "b.png")
    (tmp_path / "boxes.csv").write_text("a.png,30,30,50,50\na.png,0,0,5,5\nb.png,30,30,50,50\n")
    (tmp_path / "split.txt").write_text("a.png\n")
    res = runner.invoke(app, ["recognize", "crops", str(images), str(tmp_path / "boxes.csv"), str(tmp_path / "out"),
                              "--split", str(tmp_path / "split.txt"), "--size", "40", "--min-face", "10"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_0.png"]  # tiny face and b.png left out
    crop = np.array(Image.open(tmp_path / "out" / "a_0.png"))
    assert crop.shape == (40, 40, 3) and (crop[10:30, 10:30] == 255).all() and crop[:10].max() == 0


# --- input checks and messages ---------------------------------------------------------------------


def test_identify_refuses_an_empty_folder_and_a_video(tmp_path) -> None:
    root = _identity_folder(tmp_path / "ids")
    weights = _weights(tmp_path)
    g = tmp_path / "g.zip"
    assert runner.invoke(app, ["gallery", "add", "red", str(root / "red"), "--gallery", str(g), "--weights", str(weights)]).exit_code == 0
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["identify", str(tmp_path / "empty"), "--gallery", str(g), "--weights", str(weights)])
    assert res.exit_code == 2 and "no images in this folder" in res.output
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 64)
    res = runner.invoke(app, ["identify", str(tmp_path / "clip.mp4"), "--gallery", str(g), "--weights", str(weights)])
    assert res.exit_code == 2 and "a video; identify takes images" in res.output


def test_gallery_list_takes_the_gallery_as_option_too(tmp_path) -> None:
    root = _identity_folder(tmp_path / "ids")
    weights = _weights(tmp_path)
    g = tmp_path / "g.zip"
    for name in ("red", "blue"):
        runner.invoke(app, ["gallery", "add", name, str(root / name), "--gallery", str(g), "--weights", str(weights)])
    res = runner.invoke(app, ["gallery", "list", "--gallery", str(g)])
    assert res.exit_code == 0 and "unknown threshold" in res.output and "red\t4" in res.output
    assert runner.invoke(app, ["gallery", "list"]).exit_code == 2


def test_faiss_loader_lines_stay_out_of_the_output(tmp_path) -> None:
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "acfd", "gallery", "list", str(tmp_path / "missing.zip")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.zip'}: gallery file not found"]


def test_recognize_train_checks_folders_before_any_work(tmp_path) -> None:
    cartoon = _identity_folder(tmp_path / "cartoon")
    with pytest.raises(ValueError, match=r"missing: not a folder \(setting distractors\) \(make it with `acfd recognize crops"):
        load_recognition_config(None, [f"data={cartoon}", f"distractors={tmp_path / 'missing'}"])
    with pytest.raises(ValueError, match="setting human_data"):
        load_recognition_config(None, [f"data={cartoon}", "fusion=inter", f"human_data={tmp_path / 'nope'}"])
    with pytest.raises(ValueError, match="needs an 'unlabelled' folder"):
        load_recognition_config(None, [f"data={cartoon}", "ssl_weight=0.5"])


def test_recognize_eval_names_identities_without_two_readable_images(tmp_path) -> None:
    root = _identity_folder(tmp_path / "ids", per_identity=2)
    (root / "red" / "red_1.png").write_bytes(b"not an image")
    res = runner.invoke(app, ["recognize", "eval", str(root), "--features", "pixels"])
    assert res.exit_code == 1 and "fewer than 2 readable images: red (1)" in res.output and "red_1.png" in res.output


@pytest.mark.slow
def test_training_with_two_data_folders_self_supervision_and_colour(tmp_path) -> None:
    cartoon = _identity_folder(tmp_path / "cartoon", per_identity=5, size=24)
    more = _identity_folder(tmp_path / "more", per_identity=5, size=24, colours={"yellow": (230, 220, 20), "cyan": (20, 220, 220)}, seed=2)
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for i, p in enumerate(sorted(cartoon.rglob("*.png"))[:6]):
        (unlabelled / f"u{i}.png").write_bytes(p.read_bytes())
    overrides = [f"data=[{cartoon}, {more}]", "dev_identities=[blue, cyan]", f"unlabelled={unlabelled}", "ssl_weight=0.5",
                 "ssl_batch=4", "input_size=24", "embedding_dim=8", "batch_size=8", "epochs=1", "progress=false",
                 f"output={tmp_path / 'run'}", "max_iters=2", "warmup_iters=1", "colour_weight=0.5"]
    trainer = RecognitionTrainer(load_recognition_config(None, overrides))
    assert trainer.num_cartoon == 3 and trainer.unlabelled is not None and len(trainer.unlabelled) == 6
    losses = trainer.train_step()
    assert np.isfinite(losses["loss_ssl"]) and losses["loss"] > losses["loss_cls"]
    weights = trainer.fit()
    from acfd.recognition.embedder import Recognizer

    rec = Recognizer(weights)
    assert rec.cfg.colour_weight == 0.5 and rec.embedding_dim == 8 + 512
    crops = [np.full((24, 24, 3), c, np.uint8) for c in (0, 255)]
    assert rec.embed(crops).shape == (2, 520)
