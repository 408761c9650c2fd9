"""The CPU training recipe: AdamW + cosine, GroupNorm head, low-quality matches, DAM normalisers,
the image cache and FastTrainTransform, and an overfit check that fails if training stops learning."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from acfd.config import LossConfig, MatchConfig
from acfd.data.dataset import DetectionDataset
from acfd.data.formats import read_icartoon_csv
from acfd.data.transforms import FastTrainTransform
from acfd.deploy.fuse import fuse_model
from acfd.detection.box_coder import BoxCoder
from acfd.detection.losses import ACFDLoss
from acfd.detection.matcher import MATCHED, dynamic_anchor_match
from acfd.engine.train import TrainConfig, Trainer, build_optimizer, load_train_config, lr_factor
from acfd.models.registry import create_model

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"


# --- matching and loss -------------------------------------------------------------------------


def test_low_quality_matches_give_every_face_its_best_anchor():
    anchors = torch.tensor([[0.0, 0, 16, 16], [16, 0, 32, 16], [0, 16, 16, 32]])
    face = torch.tensor([[2.0, 2, 8, 8]])  # IoU 36/256 = 0.14 with anchor 0: below T1 = 0.35
    plain = dynamic_anchor_match(anchors, None, face)
    assert (plain.labels == MATCHED).sum() == 0
    lq = dynamic_anchor_match(anchors, None, face, low_quality_matches=True)
    assert lq.labels.tolist() == [MATCHED, 0, 0]
    assert lq.matched_idxs.tolist() == [0, -1, -1]


def test_low_quality_matches_keep_threshold_matches_and_assign_the_right_face():
    anchors = torch.tensor([[0.0, 0, 16, 16], [100, 100, 116, 116], [200, 200, 216, 216]])
    faces = torch.tensor([[0.0, 0, 16, 16], [101, 101, 104, 104]])  # exact match; a tiny face
    res = dynamic_anchor_match(anchors, None, faces, low_quality_matches=True)
    assert res.labels.tolist() == [MATCHED, MATCHED, 0]
    assert res.matched_idxs.tolist() == [0, 1, -1]


def _loss_inputs():
    torch.manual_seed(0)
    anchors = torch.tensor([[0.0, 0, 16, 16], [16, 0, 32, 16], [0, 16, 16, 32], [16, 16, 32, 32]])
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    gt = [torch.tensor([[0.0, 0, 16, 16]])]
    deltas = torch.zeros(1, 4, 4)
    # anchor 3's regression moves it exactly onto the face: a compensated anchor (psi_2)
    deltas[0, 3] = coder.encode(gt[0], anchors[3:4])[0]
    logits = torch.randn(1, 4)
    return anchors, coder, gt, deltas, logits


@pytest.mark.parametrize("norm", ["n2", "n1", "n1+n2"])
def test_loss_parts_add_up(norm):
    anchors, coder, gt, deltas, logits = _loss_inputs()
    out = ACFDLoss(LossConfig(compensated_norm=norm), MatchConfig(), coder)(logits, deltas, anchors, gt)
    assert int(out["num_matched"]) == 1 and int(out["num_compensated"]) == 1
    parts_cls = out["loss_cls_matched"] + out["loss_cls_negative"] + out["loss_cls_compensated"]
    assert torch.allclose(parts_cls, out["loss_cls"])
    assert torch.allclose(out["loss_reg_matched"] + out["loss_reg_compensated"], out["loss_reg"])
    assert out["loss_reg_compensated"] < 1e-6  # its regression is already exact


def test_compensated_normalisers_weigh_as_documented():
    anchors, coder, gt, deltas, logits = _loss_inputs()
    deltas[0, 3] += 0.05  # still compensated (IoU > 0.7) but with a regression error
    loss = {n: ACFDLoss(LossConfig(compensated_norm=n), MatchConfig(), coder)(logits, deltas, anchors, gt)
            for n in ("n2", "n1", "n1+n2")}
    # one matched, one compensated anchor: N1 = N2 = 1, so "n1" == "n2", and "n1+n2" halves both groups
    assert torch.allclose(loss["n1"]["loss_reg"], loss["n2"]["loss_reg"])
    assert torch.allclose(loss["n1+n2"]["loss_reg"], loss["n2"]["loss_reg"] / 2)
    with pytest.raises(ValueError, match="compensated_norm"):
        ACFDLoss(LossConfig(compensated_norm="n3"), MatchConfig(), coder)(logits, deltas, anchors, gt)


# --- GroupNorm head ----------------------------------------------------------------------------


def test_groupnorm_head_builds_runs_and_survives_fusion():
    model = create_model("acfd-tiny", **{"head.norm": "gn", "head.norm_groups": 4}).eval()
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in model.head.modules()) == 2
    x = model.normalize(torch.randint(0, 256, (1, 3, 128, 160), dtype=torch.uint8))
    with torch.no_grad():
        ref = model(x)
        fused = fuse_model(model)(x)
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in fuse_model(model).modules()) == 2
    for a, b in zip(ref, fused, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_head_norm_is_checked():
    with pytest.raises(ValueError, match="head norm"):
        create_model("acfd-tiny", **{"head.norm": "bn"})
    with pytest.raises(ValueError, match="divisible"):
        create_model("acfd-tiny", **{"head.norm": "gn", "head.norm_groups": 5})


# --- optimiser and schedule --------------------------------------------------------------------


def test_adamw_without_decay_on_norms_and_biases():
    model = create_model("acfd-tiny", **{"head.norm": "gn", "head.norm_groups": 4})
    opt = build_optimizer(model, TrainConfig(optimizer="adamw", weight_decay=1e-4, betas=[0.9, 0.99]), 1e-3)
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    assert decay["betas"] == (0.9, 0.99)


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(lr_schedule="cosine", epochs=10, warmup_iters=10, warmup_start_lr=0.0, min_lr_ratio=0.1)
    f = [lr_factor(i, 10, cfg, 1e-3) for i in range(0, 101)]
    assert f[0] == 0.0 and f[5] == pytest.approx(0.5) and f[10] == pytest.approx(1.0)
    assert f[55] == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the decay
    assert f[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))


@pytest.mark.parametrize(
    "override, message",
    [("optimizer=adam", "optimizer"), ("lr_schedule=poly", "lr_schedule"), ("amp=fp8", "amp"),
     ("augment=heavy", "augment")],
)
def test_recipe_settings_are_checked(override, message):
    with pytest.raises(ValueError, match=message):
        load_train_config(None, [override])


def test_cpu_recipe_config_loads():
    cfg = load_train_config(REPO / "configs" / "acfd-n-cpu.yaml")
    assert cfg.optimizer == "adamw" and cfg.augment == "fast" and cfg.lr_schedule == "cosine"
    assert cfg.model_overrides == {"head.norm": "gn", "match.low_quality_matches": True}
    paper = load_train_config(REPO / "configs" / "acfd-l-paper.yaml")
    assert paper.optimizer == "sgd" and paper.augment is True and paper.lr_schedule == "step"


# --- data path ---------------------------------------------------------------------------------


def _boxed_image(h=300, w=400, box=(100, 80, 180, 200)):
    image = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = (255, 0, 0)
    return image, np.array([box], np.float32)


def test_fast_transform_keeps_boxes_on_their_pixels():
    image, boxes = _boxed_image()
    for seed in range(20):
        t = FastTrainTransform(size=128, zoom_range=(0.3, 2.0), photometric_p=0.0, seed=seed)
        out, out_boxes = t(image, boxes)
        assert out.shape == (3, 128, 128) and out.dtype == torch.uint8
        assert out_boxes.shape[1] == 4 and out_boxes.dtype == torch.float32
        if len(out_boxes) == 0:
            continue
        x1, y1, x2, y2 = out_boxes[0].round().int().tolist()
        assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 128
        inner = out[0, y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].float()
        if inner.numel():
            assert inner.mean() > 200, f"seed {seed}: the box is not on the red square"
        # nothing red outside the box (a one-pixel margin for interpolation)
        red = (out[0] > 128) & (out[1] < 64)
        red[max(0, y1 - 1) : y2 + 1, max(0, x1 - 1) : x2 + 1] = False
        assert not red.any()


def test_fast_transform_zoom_is_relative_to_the_input_and_seeded():
    image, boxes = _boxed_image()
    t = FastTrainTransform(size=256, zoom_range=(1.0, 1.0), face_p=1.0, flip_p=0.0, photometric_p=0.0, seed=3)
    _, out_boxes = t(image, boxes)
    w, h = (out_boxes[0, 2:] - out_boxes[0, :2]).tolist()
    assert (w, h) == pytest.approx((80, 120), abs=1)  # zoom 1: faces keep their size
    a = FastTrainTransform(size=96, seed=7)(image, boxes)
    b = FastTrainTransform(size=96, seed=7)(image, boxes)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # tensors (3, H, W) are accepted too, with the same result
    c = FastTrainTransform(size=96, seed=7)(torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(boxes))
    assert torch.equal(a[0], c[0]) and torch.allclose(a[1], c[1])


def test_fast_transform_settings_are_checked():
    with pytest.raises(ValueError, match="zoom_range"):
        FastTrainTransform(zoom_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="flip_p"):
        FastTrainTransform(flip_p=1.5)
    with pytest.raises(ValueError, match="uint8"):
        FastTrainTransform()(np.zeros((10, 10), np.uint8), np.zeros((0, 4)))


def test_image_cache_resizes_once_and_scales_boxes():
    records, _ = read_icartoon_csv(SAMPLES / "annotations.csv")
    plain = DetectionDataset(SAMPLES, records)
    cached = DetectionDataset(SAMPLES, records, cache_max_side=320, transform=FastTrainTransform(size=64, seed=0))
    cached.preload(progress=False)
    assert len(cached._cache) == len(cached)
    for i in range(len(cached)):
        array, boxes = cached._cache[i]
        original = plain[i][0]
        factor = 320 / max(original.shape[1:])
        assert max(array.shape[:2]) == 320 and not array.flags.writeable
        assert np.allclose(boxes, plain.boxes(i) * factor, atol=2.0)
    image, target = cached[0]
    assert image.shape == (3, 64, 64)
    with pytest.raises(ValueError, match="cache_max_side"):
        DetectionDataset(SAMPLES, records, cache_max_side=0)


# --- training learns ---------------------------------------------------------------------------


@pytest.mark.slow
def test_overfit_reaches_ap50_90_on_its_own_images(tmp_path):
    """acfd-tiny, the CPU recipe without augmentation, 5 sample images: must reach AP50 >= 90% on them."""
    from acfd.engine.evaluate import evaluate_model

    torch.manual_seed(0)
    cfg = TrainConfig(
        model="acfd-tiny",
        model_overrides={"head.norm": "gn", "head.norm_groups": 4, "match.low_quality_matches": True},
        images=str(SAMPLES), annotations=str(SAMPLES / "annotations.csv"), train_split=None, val_split=None,
        input_size=256, augment="none", batch_size=5, workers=0, epochs=80, optimizer="adamw",
        base_lr=5e-3, base_batch_size=5, weight_decay=1e-4, warmup_iters=10, warmup_start_lr=1e-5,
        lr_schedule="cosine", min_lr_ratio=0.05, eval_every=0, save_every=10**6, log_every=10,
        output=str(tmp_path / "run"), progress=False, device="cpu",
    )
    trainer = Trainer(cfg)
    trainer.fit()
    losses = [r["loss"] for r in trainer.history if r["type"] == "train"]
    assert losses[-1] < 0.3 * losses[0]
    # the view it trained on: no test-time flip (it never saw mirrored images; --eval's flip and
    # view-agreement rescoring are for the shipped model), the paper's NMS
    ev = evaluate_model(trainer.model.eval(), SAMPLES, trainer.records, scales=["256x256"], flip=False,
                        agreement_iou=None, nms_thresh=0.55)
    assert ev.ap50 >= 0.90, f"AP50 {ev.ap50:.3f} on the training images: training no longer learns"
    assert math.isfinite(losses[-1])


def test_init_weights_starts_from_a_file(tmp_path):
    from acfd.predict.modelfile import save_weights

    source = create_model("acfd-tiny", **{"head.norm": "gn", "head.norm_groups": 4})
    save_weights(source, tmp_path / "leg1.safetensors")
    cfg = TrainConfig(model="acfd-tiny", model_overrides={"head.norm": "gn", "head.norm_groups": 4},
                      images=str(SAMPLES), annotations=str(SAMPLES / "annotations.csv"), train_split=None,
                      val_split=None, workers=0, device="cpu", output=str(tmp_path / "run"),
                      init_weights=str(tmp_path / "leg1.safetensors"))
    trainer = Trainer(cfg)
    for name, value in source.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[name], value), name
    with pytest.raises(ValueError, match="do not fit"):
        Trainer(TrainConfig(**{**cfg.__dict__, "model_overrides": {}}))
