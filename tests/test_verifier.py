"""Second-stage face verifier (acfd.detection.verifier, acfd.engine.verifier_training,
acfd train-verifier): crop geometry, mirror symmetry of the box offsets, the stacking, the file
format and its errors, how the Detector finds and applies it, and the shipped one."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from acfd.cli import app
from acfd.detection.verifier import (
    BoxVerifier,
    FaceVerifier,
    VerifierConfig,
    VerifierStacking,
    context_crops,
    flip_offsets,
    flip_outputs,
    get_verifier_config,
    load_verifier,
    save_verifier,
)
from acfd.engine.verifier_training import held_out, predict, train_verifier
from acfd.models.registry import create_model
from acfd.predict.detector import Detector
from acfd.predict.modelfile import ModelFile, default_weights_path, save_weights
from acfd.predict.modelfile import verifier_path as default_verifier_path

TINY = get_verifier_config("r4-tiny")


def detector_fingerprint(weights: Path) -> str | None:
    return ModelFile.open(weights).fingerprint


def _tiny_verifier(seed: int = 0) -> FaceVerifier:
    torch.manual_seed(seed)
    return FaceVerifier(TINY).eval()


# --------------------------------------------------------------------------------------------
# crops and the mirror symmetry


def test_context_crops_centre_a_square_of_context_times_the_longer_side() -> None:
    image = np.zeros((200, 400, 3), np.uint8)
    image[:, :200] = (255, 0, 0)  # left half red, right half blue
    image[:, 200:] = (0, 0, 255)
    cfg = VerifierConfig("t", crop_size=32, context=2.0, long_side=400)  # no resizing
    # a 50 x 20 box centred on the border: the crop spans x 150..250, half red, half blue
    # a box in the corner: the crop spans -10..30, so its first quarter is outside (black)
    crops = context_crops(image, np.array([[175, 90, 225, 110], [0, 0, 20, 20]]), cfg)
    assert crops.shape == (2, 3, 32, 32) and crops.dtype == torch.uint8
    centred = crops[0].numpy()
    assert (centred[0, :, :15] == 255).all() and (centred[2, :, :15] == 0).all()
    assert (centred[2, :, 17:] == 255).all() and (centred[0, :, 17:] == 0).all()
    corner = crops[1].numpy()
    assert (corner[:, :7, :] == 0).all() and (corner[:, :, :7] == 0).all()
    assert (corner[0, 9:, 9:] == 255).all()
    # the same crop from a bigger copy of the image: the boxes are in original pixels
    big = np.repeat(np.repeat(image, 2, 0), 2, 1)
    again = context_crops(big, np.array([[350, 180, 450, 220]]), cfg)
    assert (again[0].int() - crops[0].int()).abs().max() <= 2
    assert context_crops(image, np.zeros((0, 4)), cfg).shape == (0, 3, 32, 32)


def test_mirrored_offsets_match_the_mirrored_image() -> None:
    box = np.array([40.0, 30.0, 100.0, 80.0])
    face = np.array([44.0, 28.0, 96.0, 90.0])
    width = 200.0

    def offsets(b, f):
        side = max(b[2] - b[0], b[3] - b[1])
        return torch.tensor((f - b) / side, dtype=torch.float32)[None]

    def mirror(b):
        return np.array([width - b[2], b[1], width - b[0], b[3]])

    expect = offsets(mirror(box), mirror(face))
    assert torch.allclose(flip_offsets(offsets(box, face)), expect)
    out = torch.cat([torch.tensor([[1.5]]), offsets(box, face)], 1)
    assert torch.allclose(flip_outputs(out), torch.cat([torch.tensor([[1.5]]), expect], 1))
    assert torch.allclose(flip_outputs(flip_outputs(out)), out)


def test_flip_averaged_outputs_are_mirror_symmetric() -> None:
    model = _tiny_verifier()
    crops = torch.randint(0, 255, (6, 3, 32, 32), dtype=torch.uint8)
    plain, mirrored = predict(model, crops), predict(model, crops.flip(-1))
    assert torch.allclose(flip_outputs(mirrored), plain, atol=1e-5)
    assert not torch.allclose(predict(model, crops, flip=False), plain)


# --------------------------------------------------------------------------------------------
# the stacking and BoxVerifier


def test_stacking_is_a_logistic_regression_of_the_two_logits() -> None:
    scores = torch.tensor([0.2, 0.5, 0.9])
    logits = torch.tensor([3.0, -1.0, 0.0])
    same = VerifierStacking(1.0, 0.0, 0.0)
    assert torch.allclose(same(scores, logits), scores)
    mixed = VerifierStacking(0.5, 2.0, -0.25)
    z = 0.5 * torch.log(scores / (1 - scores)) + 2.0 * logits - 0.25
    assert torch.allclose(mixed(scores, logits), torch.sigmoid(z))
    assert mixed(scores, logits).dtype == scores.dtype


def test_capped_verifier_logit_bounds_which_boxes_can_pass_a_threshold() -> None:
    stacking = VerifierStacking(0.8, 0.25, 0.1, max_verifier_logit=8.0)
    floor = stacking.min_detector_score(0.35)
    best = stacking(torch.tensor([floor], dtype=torch.float64), torch.tensor([100.0]))
    assert float(best) == pytest.approx(0.35, abs=1e-9)  # the best a box at the floor can do ...
    above = stacking(torch.tensor([floor * 1.01], dtype=torch.float64), torch.tensor([8.0]))
    assert float(above) > 0.35  # ... and just above it the cap lifts it over
    assert stacking.min_detector_score(0.0) == 0.0
    assert VerifierStacking(0.8, -0.25, 0.1).min_detector_score(0.35) == 0.0  # nothing can be ruled out


def test_box_verifier_skips_boxes_that_cannot_pass_and_onnx_runtime_agrees() -> None:
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    boxes = torch.tensor([[10.0, 10.0, 50.0, 40.0], [100.0, 60.0, 158.0, 118.0], [60.0, 20.0, 90.0, 60.0]])
    stacking = VerifierStacking(1.0, 0.2, 0.0, box_step=0.5, max_verifier_logit=5.0)
    floor = stacking.min_detector_score(0.5)
    scores = torch.tensor([0.9, floor * 0.99, floor * 1.01])
    verifier = BoxVerifier(_tiny_verifier(), stacking)
    all_boxes, all_scores = verifier(image, boxes, scores)
    kept_boxes, kept_scores = verifier(image, boxes, scores, score_thresh=0.5)
    assert len(kept_boxes) == 2 and float(all_scores[1]) <= 0.5  # the skipped box could not have passed
    assert torch.allclose(kept_boxes, all_boxes[[0, 2]]) and torch.allclose(kept_scores, all_scores[[0, 2]])
    from acfd.utils import cache_dir

    for name in cache_dir().glob("verifier-stage-r4-tiny-*.onnx"):
        name.unlink()
    fast = BoxVerifier(_tiny_verifier(), stacking).use_onnx_runtime(1)
    assert "onnx" in repr(fast)
    cached = list(cache_dir().glob("verifier-stage-r4-tiny-*.onnx"))
    assert len(cached) == 1  # exported once ...
    ort_boxes, ort_scores = fast(image, boxes, scores)
    assert torch.allclose(ort_boxes, all_boxes, atol=1e-3) and torch.allclose(ort_scores, all_scores, atol=1e-5)
    stamp = cached[0].stat().st_mtime_ns
    again = BoxVerifier(_tiny_verifier(), stacking).use_onnx_runtime(1)  # ... then read back
    assert cached[0].stat().st_mtime_ns == stamp
    assert torch.allclose(again(image, boxes, scores)[1], ort_scores)
    other = BoxVerifier(_tiny_verifier(seed=1), stacking).use_onnx_runtime(1, cache=False)  # other weights
    assert not torch.allclose(other(image, boxes, scores)[1], ort_scores)
    assert len(list(cache_dir().glob("verifier-stage-r4-tiny-*.onnx"))) == 1


def test_box_verifier_rescores_and_moves_boxes_by_the_offsets() -> None:
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    boxes = torch.tensor([[10.0, 10.0, 50.0, 40.0], [100.0, 60.0, 158.0, 118.0]])
    scores = torch.tensor([0.6, 0.3])
    model = _tiny_verifier()
    out = BoxVerifier(model, VerifierStacking(1.0, 1.0, 0.0, box_step=0.0)).outputs(image, boxes.numpy())
    kept_boxes, rescored = BoxVerifier(model, VerifierStacking(1.0, 1.0, 0.0, box_step=0.0))(image, boxes, scores)
    assert torch.equal(kept_boxes, boxes)
    assert torch.allclose(rescored, torch.sigmoid(torch.log(scores / (1 - scores)) + out[:, 0]), atol=1e-6)
    moved, _ = BoxVerifier(model, VerifierStacking(1.0, 1.0, 0.0, box_step=0.5))(image, boxes, scores)
    long_side = torch.tensor([[40.0], [58.0]])
    expect = boxes + 0.5 * out[:, 1:] * long_side
    expect[:, 0::2] = expect[:, 0::2].clamp(0, 160)
    expect[:, 1::2] = expect[:, 1::2].clamp(0, 120)
    assert torch.allclose(moved, expect, atol=1e-5)
    empty = BoxVerifier(model, VerifierStacking(1.0, 1.0, 0.0))(image, torch.zeros((0, 4)), torch.zeros(0))
    assert empty[0].shape == (0, 4) and empty[1].shape == (0,)


def test_max_boxes_crops_only_the_best_boxes_and_scores_the_rest_with_the_unverified_logit() -> None:
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    boxes = torch.tensor([[10.0, 10.0, 50.0, 40.0], [100.0, 60.0, 158.0, 118.0], [60.0, 20.0, 90.0, 60.0]])
    scores = torch.tensor([0.3, 0.9, 0.6])
    stacking = VerifierStacking(1.0, 0.5, 0.0, box_step=0.5, unverified_logit=-3.0)
    model = _tiny_verifier()
    all_boxes, all_scores = BoxVerifier(model, stacking)(image, boxes, scores)
    cropped: list[int] = []
    verifier = BoxVerifier(model, stacking)
    outputs = verifier.outputs
    verifier.outputs = lambda im, b: cropped.append(len(b)) or outputs(im, b)  # type: ignore[method-assign]
    top_boxes, top_scores = verifier(image, boxes, scores, max_boxes=2)
    assert cropped == [2]  # the two best (0.9, 0.6) are cropped, in one call
    assert torch.allclose(top_boxes[1:], all_boxes[1:]) and torch.allclose(top_scores[1:], all_scores[1:])
    assert torch.equal(top_boxes[0], boxes[0])  # the third keeps its box ...
    assert float(top_scores[0]) == pytest.approx(float(stacking(scores[:1].double(), torch.tensor([-3.0]))[0]), abs=1e-6)
    fast = BoxVerifier(model, stacking).use_onnx_runtime(1, cache=False)  # ... on ONNX Runtime alike
    ort_boxes, ort_scores = fast(image, boxes, scores, max_boxes=2)
    assert torch.allclose(ort_boxes, top_boxes, atol=1e-3) and torch.allclose(ort_scores, top_scores, atol=1e-5)
    without = BoxVerifier(model, replace(stacking, unverified_logit=None))  # no logit for the rest: all cropped
    assert torch.allclose(without(image, boxes, scores, max_boxes=2)[1], all_scores)


def test_the_evaluation_preset_verifies_the_best_20_boxes_and_the_options_change_it() -> None:
    assert Detector.for_evaluation(verifier=None).verifier_max_boxes == 20
    assert Detector(verifier=None).verifier_max_boxes is None
    assert Detector.for_evaluation(verifier=None, verifier_max_boxes=0).verifier_max_boxes is None
    assert Detector.for_evaluation(verifier=None, verifier_max_boxes=5).verifier_max_boxes == 5
    with pytest.raises(ValueError, match="verifier_max_boxes must be an integer >= 1"):
        Detector(verifier=None, verifier_max_boxes=-1)
    for command in ("detect", "eval"):
        assert "--verifier-max-boxes" in CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output


def test_training_learns_to_tell_bright_squares_from_dark_ones() -> None:
    from acfd.engine.verifier_training import VerifierSamples

    n = 96
    rng = np.random.default_rng(0)
    is_face = np.arange(n) % 2 == 0
    crops = torch.from_numpy(rng.integers(0, 60, (n, 3, 32, 32), dtype=np.uint8))
    crops[is_face, :, 8:24, 8:24] = 230
    samples = VerifierSamples(crops, is_face, np.zeros((n, 4), np.float32), np.zeros(n, bool), np.ones(n, bool),
                              np.zeros((n, 4), np.float32), np.full(n, 0.5), np.full(n, 0.5), np.zeros(n, int), ["a"])
    model = train_verifier(samples, TINY, epochs=8, batch_size=16, warmup_iters=5)
    logits = predict(model, crops)[:, 0]
    assert logits[is_face].min() > logits[~is_face].max()


def test_ensemble_trains_each_member_with_its_own_seed_and_averages_them(tmp_path: Path) -> None:
    from acfd.engine.verifier_training import VerifierSamples

    n = 48
    rng = np.random.default_rng(0)
    is_face = np.arange(n) % 2 == 0
    crops = torch.from_numpy(rng.integers(0, 255, (n, 3, 32, 32), dtype=np.uint8))
    samples = VerifierSamples(crops, is_face, np.zeros((n, 4), np.float32), np.zeros(n, bool), np.ones(n, bool),
                              np.zeros((n, 4), np.float32), np.full(n, 0.5), np.full(n, 0.5), np.zeros(n, int), ["a"])
    pair = get_verifier_config("r4-tiny-x2")
    assert pair.members == 2
    ensemble = train_verifier(samples, pair, epochs=1, batch_size=16, warmup_iters=1, seed=3)
    alone = [train_verifier(samples, TINY, epochs=1, batch_size=16, warmup_iters=1, seed=s) for s in (3, 4)]
    x = torch.randint(0, 255, (5, 3, 32, 32), dtype=torch.uint8)
    assert torch.allclose(predict(ensemble, x), (predict(alone[0], x) + predict(alone[1], x)) / 2, atol=1e-5)
    assert not torch.allclose(predict(alone[0], x), predict(alone[1], x))  # two different networks
    loaded = load_verifier(save_verifier(ensemble, VerifierStacking(1.0, 1.0, 0.0), tmp_path / "pair.safetensors"))
    assert loaded.cfg == pair and torch.allclose(predict(loaded.model, x), predict(ensemble, x))
    fast = BoxVerifier(ensemble, VerifierStacking(1.0, 1.0, 0.0)).use_onnx_runtime(1, cache=False)  # one graph
    image = rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)
    boxes = np.array([[10.0, 10.0, 50.0, 40.0], [40.0, 20.0, 90.0, 70.0]])
    assert torch.allclose(fast.outputs(image, boxes), BoxVerifier(ensemble, fast.stacking).outputs(image, boxes), atol=1e-4)
    with pytest.raises(ValueError, match="needs 2 single-network members"):
        FaceVerifier.ensemble(pair, alone[:1])
    with pytest.raises(ValueError, match="members must be at least 1"):
        replace(TINY, members=0)


def test_verifier_files_from_before_ensembles_still_load(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = _tiny_verifier()
    old_keys = {k.replace("nets.0.", "net.", 1): v.contiguous() for k, v in model.state_dict().items()}
    meta = {"config": {k: v for k, v in TINY.to_dict().items() if k != "members"},
            "stacking": {"score_weight": 1.0, "verifier_weight": 1.0, "bias": 0.0}}
    save_file(old_keys, str(tmp_path / "old.safetensors"), metadata={"acfd_verifier": json.dumps(meta)})
    loaded = load_verifier(tmp_path / "old.safetensors")
    crops = torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)
    assert loaded.cfg == TINY and torch.equal(predict(loaded.model, crops), predict(model, crops))


def test_held_out_fold_depends_on_the_name_only() -> None:
    names = [f"img{i:04d}.jpg" for i in range(500)]
    fold = held_out(names)
    assert 60 < fold.sum() < 140  # about a fifth
    again = held_out(names[::-1])[::-1]
    assert np.array_equal(fold, again)


# --------------------------------------------------------------------------------------------
# the file


def test_verifier_file_round_trips_and_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    model = _tiny_verifier()
    stacking = VerifierStacking(0.8, 0.25, 0.01, box_step=0.75, calibrated=False, fitted_on="test")
    path = save_verifier(model, stacking, tmp_path / "v.safetensors", detector="abc")
    loaded = load_verifier(path)
    assert loaded.cfg == TINY and loaded.stacking == stacking and loaded.detector == "abc"
    crops = torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)
    assert torch.allclose(predict(loaded.model, crops), predict(model, crops))
    assert not list(tmp_path.glob("*.tmp*"))  # written through a temporary file

    with pytest.raises(FileNotFoundError, match="missing.safetensors: verifier file not found"):
        load_verifier(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"junk.safetensors: not a readable .safetensors verifier") as info:
        load_verifier(junk)
    assert "\n" not in str(info.value)
    detector_weights = save_weights(create_model("acfd-tiny"), tmp_path / "det.safetensors")
    with pytest.raises(ValueError, match="det.safetensors: not a verifier file"):
        load_verifier(detector_weights)
    from safetensors.torch import save_file

    other = FaceVerifier(VerifierConfig("r4-32")).state_dict()
    save_file({k: v.contiguous() for k, v in other.items()}, str(tmp_path / "wrong.safetensors"),
              metadata={"acfd_verifier": json.dumps({"config": TINY.to_dict(), "stacking": {"score_weight": 1.0,
                        "verifier_weight": 1.0, "bias": 0.0}})})
    with pytest.raises(ValueError, match="wrong.safetensors: weights do not fit verifier 'r4-tiny'"):
        load_verifier(tmp_path / "wrong.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "broken.safetensors"), metadata={"acfd_verifier": "{"})
    with pytest.raises(ValueError, match="broken.safetensors: broken verifier metadata"):
        load_verifier(tmp_path / "broken.safetensors")
    with pytest.raises(ValueError, match="unknown verifier config keys: depth"):
        VerifierConfig.from_dict({**TINY.to_dict(), "depth": 3})
    # files written before the setting was named raw_score_floor
    assert VerifierStacking.from_dict({"score_weight": 1.0, "verifier_weight": 1.0, "bias": 0.0, "raw_floor": 0.2}).raw_score_floor == 0.2
    with pytest.raises(ValueError, match="unknown verifier stacking keys: floor"):
        VerifierStacking.from_dict({"score_weight": 1.0, "verifier_weight": 1.0, "bias": 0.0, "floor": 0.2})
    with pytest.raises(ValueError, match="unknown verifier 'r9'"):
        get_verifier_config("r9")


# --------------------------------------------------------------------------------------------
# the Detector


@pytest.fixture(scope="module")
def tiny_weights(spread_tiny_model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uncalibrated weights of conftest's acfd-tiny with spread scores."""
    return save_weights(spread_tiny_model, tmp_path_factory.mktemp("verifier") / "tiny.safetensors")


def _image() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (120, 200, 3), dtype=np.uint8)


def _beside(weights: Path, stacking: VerifierStacking, detector: str | None = None) -> Path:
    return save_verifier(_tiny_verifier(), stacking, default_verifier_path(weights),
                         detector=detector_fingerprint(weights) if detector is None else detector)


def test_detector_uses_the_verifier_fitted_for_its_weights(tiny_weights: Path, caplog: pytest.LogCaptureFixture) -> None:
    stacking = VerifierStacking(1.0, 1.0, 0.0, box_step=1.0, raw_score_floor=0.3, calibrated=False)
    path = _beside(tiny_weights, stacking)
    try:
        assert path == tiny_weights.with_name("tiny-verifier.safetensors")
        plain = Detector(tiny_weights, backend="torch", scales="160", score_thresh=0.0, verifier=None)
        verified = Detector(tiny_weights, backend="torch", scales="160", score_thresh=0.0)
        assert plain.verifier is None and verified.verifier is not None and "verifier=True" in repr(verified)
        assert verified._raw_floor() == 0.3  # every box the verifier may raise is kept for it
        image = _image()
        base = Detector(tiny_weights, backend="torch", scales="160", score_thresh=0.0, raw_score_floor=0.3,
                        verifier=None)(image)
        got = verified(image)
        assert len(got) == len(base) > 0
        _, expect = verified.verifier(image, torch.from_numpy(base.boxes), torch.from_numpy(base.scores))
        assert np.allclose(np.sort(got.scores), np.sort(expect.numpy()), atol=1e-5)
        assert not np.allclose(np.sort(got.scores), np.sort(base.scores))
        assert verified.timings.verify > 0 and "verify" in verified.timings.per_image_ms()
        # the threshold applies to the verified scores
        cut = float(np.median(got.scores))
        assert np.all(Detector(tiny_weights, backend="torch", scales="160", score_thresh=cut)(image).scores > cut)

        # fitted for other weights: a warning, and not used unless asked for by path
        _beside(tiny_weights, stacking, detector="0123456789abcdef")
        with caplog.at_level(logging.WARNING, logger="acfd.predict.modelfile"):
            assert Detector(tiny_weights, backend="torch").verifier is None
        assert "fitted for other weights" in caplog.text
        assert Detector(tiny_weights, backend="torch", verifier=path).verifier is not None
        # fitted on calibrated scores: not for a detector whose scores are raw
        _beside(tiny_weights, replace(stacking, calibrated=True))
        assert Detector(tiny_weights, backend="torch").verifier is None
        with pytest.raises(ValueError, match="combines calibrated detector scores, but this detector's are raw"):
            Detector(tiny_weights, backend="torch", verifier=path)
    finally:
        path.unlink(missing_ok=True)
    assert Detector(tiny_weights, backend="torch").verifier is None  # none beside the weights


def test_detect_cli_verifier_flag(tiny_weights: Path, tmp_path: Path) -> None:
    from PIL import Image

    path = _beside(tiny_weights, VerifierStacking(1.0, 1.0, -4.0, box_step=0.0, raw_score_floor=0.08, calibrated=False))
    try:
        Image.fromarray(_image()).save(tmp_path / "a.png")
        scores = {}
        for flag in ("--verifier", "--no-verifier"):
            res = CliRunner().invoke(app, ["detect", str(tmp_path / "a.png"), "--weights", str(tiny_weights), "--scales",
                                           "160", "--score-thresh", "0", "--format", "json", "-o",
                                           str(tmp_path / f"{flag}.json"), "--no-progress", flag])
            assert res.exit_code == 0, res.output
            faces = json.loads((tmp_path / f"{flag}.json").read_text())[0]["detections"]
            scores[flag] = sorted(f["score"] for f in faces)
        assert len(scores["--verifier"]) == len(scores["--no-verifier"]) > 0
        assert scores["--verifier"] != pytest.approx(scores["--no-verifier"], abs=1e-3)  # the bias of -4 lowers them
    finally:
        path.unlink(missing_ok=True)


def test_export_carries_the_verifier_to_the_onnx_detector(tiny_weights: Path, tmp_path: Path) -> None:
    import shutil

    weights = Path(shutil.copy(tiny_weights, tmp_path / "mine.safetensors"))
    stacking = VerifierStacking(1.0, 1.0, -2.0, box_step=1.0, raw_score_floor=0.08, calibrated=False)
    _beside(weights, stacking)
    out = tmp_path / "deploy" / "mine.onnx"
    out.parent.mkdir()
    res = CliRunner().invoke(app, ["export", str(weights), "-o", str(out), "--no-check"])
    assert res.exit_code == 0, res.output
    copied = out.with_name("mine-verifier.safetensors")
    assert copied.is_file() and f"verifier: {copied}" in res.output
    image = _image()
    onnx = Detector(str(out), scales="160", score_thresh=0.0)
    torch_det = Detector(weights, backend="torch", scales="160", score_thresh=0.0)
    assert onnx.verifier is not None and onnx.verifier.source == str(copied)
    got, expect = onnx(image), torch_det(image)
    assert len(got) == len(expect) > 0
    assert np.allclose(np.sort(got.scores), np.sort(expect.scores), atol=1e-4)
    assert not np.allclose(np.sort(got.scores), np.sort(Detector(str(out), scales="160", score_thresh=0.0,
                                                                  verifier=None)(image).scores), atol=1e-3)
    # a verifier beside the .onnx that was fitted for other weights is not used
    _beside(weights, stacking, detector="0123456789abcdef")
    shutil.copy(default_verifier_path(weights), copied)
    assert Detector(str(out), scales="160").verifier is None
    # --no-verifier, or weights with no verifier fitted for them: nothing is copied
    copied.unlink()
    res = CliRunner().invoke(app, ["export", str(weights), "-o", str(out), "--no-check", "--no-verifier"])
    assert res.exit_code == 0, res.output
    assert not copied.exists() and "verifier:" not in res.output
    res = CliRunner().invoke(app, ["export", str(weights), "-o", str(out), "--no-check"])
    assert res.exit_code == 0 and not copied.exists()  # the one beside the weights is for other weights
    assert Detector(str(out), scales="160").verifier is None


# --------------------------------------------------------------------------------------------
# acfd train-verifier and the shipped verifier


def test_train_verifier_cli_writes_a_verifier_the_detector_picks_up(samples_dir: Path, tmp_path: Path) -> None:
    src = default_weights_path()
    weights = tmp_path / "acfd-n.safetensors"
    weights.write_bytes(src.read_bytes())
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    result = CliRunner().invoke(app, ["train-verifier", str(weights), "--gt", str(samples_dir / "annotations.csv"),
                                      "--images", str(samples_dir), "--variant", "r4-tiny-x2", "--epochs", "2",
                                      "--max-verifier-logit", "6", "--no-progress"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "acfd-n-verifier.safetensors"
    assert f"{out}: r4-tiny-x2 trained on" in result.output and "held-out AP50 (1 images): detector" in result.output
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == digest  # the input is never changed
    loaded = load_verifier(out)
    assert loaded.detector == detector_fingerprint(weights) and loaded.stacking.calibrated
    assert "5 images" in loaded.stacking.fitted_on and loaded.stacking.box_step in (0.0, 0.5, 0.75, 1.0)
    assert loaded.stacking.max_verifier_logit == 6.0 and len(loaded.model.nets) == 2
    det = Detector(weights, score_thresh=0.0)
    assert det.verifier is not None and det.verifier.cfg.name == "r4-tiny-x2"
    faces = det(samples_dir / "personai_icartoonface_dettrain_00330.jpg")
    assert len(faces) and 0 <= faces.scores.min() and faces.scores.max() <= 1


def test_train_verifier_cli_errors_name_the_file(samples_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["--gt", str(samples_dir / "annotations.csv"), "--images", str(samples_dir)]
    pt = tmp_path / "w.pt"
    pt.write_bytes(b"x")
    result = runner.invoke(app, ["train-verifier", str(pt), *args])
    assert result.exit_code != 0 and f"{pt}: a verifier is fitted for a .safetensors weights file" in result.output
    result = runner.invoke(app, ["train-verifier", str(tmp_path / "missing.safetensors"), *args])
    assert result.exit_code != 0 and "missing.safetensors: weights file not found" in result.output
    w = default_weights_path()
    result = runner.invoke(app, ["train-verifier", str(w), *args, "-o", str(w)])
    assert result.exit_code != 0 and "would overwrite the detector weights" in result.output
    result = runner.invoke(app, ["train-verifier", str(w), *args, "--variant", "r9", "-o", str(tmp_path / "v.safetensors")])
    assert result.exit_code != 0 and "unknown verifier variant 'r9'" in result.output


def test_shipped_verifier_belongs_to_the_shipped_weights(samples_dir: Path) -> None:
    weights = default_weights_path()
    path = default_verifier_path(weights)
    if not path.is_file():
        pytest.skip(f"no verifier shipped beside {weights}")
    verifier = load_verifier(path)
    assert verifier.detector == detector_fingerprint(weights)
    assert verifier.stacking.calibrated and "held-out images" in verifier.stacking.fitted_on
    det = Detector()
    assert det.verifier is not None and det.verifier.source == str(path)
    assert Detector(verifier=None).verifier is None


def test_the_gate_skips_boxes_that_only_an_unseen_logit_could_lift() -> None:
    from acfd.engine.verifier_training import choose_gate_logit

    stacking = VerifierStacking(0.75, 0.3, 0.05, max_verifier_logit=8.0)
    gated = dataclasses.replace(stacking, gate_logit=4.0)
    assert 0 < stacking.min_detector_score(0.35) < gated.min_detector_score(0.35) < 0.35
    needed = gated.needed_logits(np.array([gated.min_detector_score(0.35)]), 0.35)
    assert abs(float(needed[0]) - 4.0) < 1e-6  # the gate's score needs exactly the gate's logit
    scores = np.array([0.05, 0.2, 0.3, 0.6, 0.9])
    logits = np.array([-3.0, 2.5, 1.0, 3.0, 5.0])
    gate = choose_gate_logit(stacking, scores, logits, thresholds=(0.35,), margin=0.5)
    passed = logits > stacking.needed_logits(scores, 0.35)
    assert gate == np.ceil((stacking.needed_logits(scores, 0.35)[passed].max() + 0.5) * 2) / 2
    assert choose_gate_logit(stacking, scores, np.full(5, -9.0), thresholds=(0.35,)) is None  # nothing passed
