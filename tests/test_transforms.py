"""Tests of acfd.data.transforms: boxes must stay aligned with the pixels through every step.

Each face of a synthetic black image is painted a unique solid colour; after a transform, the pixels
inside each returned box must carry one face's colour, the box must be tight around that colour, and
a face fully visible in the output must still have its box.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from acfd.data.transforms import (
    DEFAULT_MEAN,
    DataAnchorSampling,
    EvalTransform,
    PhotometricDistort,
    RandomSquareCrop,
    TrainTransform,
)

SIZE = 128
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)]
# 160x120 image; faces of 30, 80, 16, 8 px and one in the bottom-right corner
FACES = [[10, 10, 40, 40], [70, 15, 150, 95], [20, 70, 36, 86], [50, 100, 58, 108], [140, 100, 160, 120]]
ONLY = {"p_expand": 0.0, "p_crop": 0.0, "p_anchor_sampling": 0.0}
BRANCHES = {
    "none": {},
    "expand": {"p_expand": 1.0},
    "crop": {"p_crop": 1.0},
    "anchor": {"p_anchor_sampling": 1.0},
}
MEAN_RGB = torch.tensor([round(m) for m in DEFAULT_MEAN])


def paint(h: int, w: int, faces: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    img = torch.zeros(3, h, w, dtype=torch.uint8)
    for (x1, y1, x2, y2), c in zip(faces, COLOURS, strict=False):
        img[:, int(y1) : int(y2), int(x1) : int(x2)] = torch.tensor(c, dtype=torch.uint8).view(3, 1, 1)
    return img, torch.tensor(faces, dtype=torch.float32).reshape(-1, 4)


def _tv(img: torch.Tensor, boxes: torch.Tensor) -> tuple[tv_tensors.Image, tv_tensors.BoundingBoxes]:
    canvas = (int(img.shape[-2]), int(img.shape[-1]))
    return tv_tensors.Image(img), tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=canvas)


def _centre_inside(boxes: torch.Tensor, x0: float, y0: float, x1: float, y1: float) -> torch.Tensor:
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return (cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)


def colour_mask(img: np.ndarray, colour: tuple[int, int, int], tol: int = 60) -> np.ndarray:
    """(H, W) bool: pixels of ``img`` (int16 (3, H, W)) within ``tol`` of ``colour`` per channel."""
    diff = np.abs(img - np.array(colour, dtype=np.int16).reshape(3, 1, 1)).max(0)
    return diff <= tol


def mask_box(mask: np.ndarray) -> list[float] | None:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def assert_aligned(img: torch.Tensor, boxes: torch.Tensor, n_colours: int, tol_px: float = 2.5) -> None:
    """Every box holds one face colour and is tight around it; every fully visible face has a box."""
    h, w = img.shape[-2:]
    assert img.dtype == torch.uint8 and img.shape == (3, SIZE, SIZE)
    assert boxes.dtype == torch.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert ((boxes[:, 2] - boxes[:, 0]) >= 2).all() and ((boxes[:, 3] - boxes[:, 1]) >= 2).all()
    pixels = img.numpy().astype(np.int16)
    used: set[int] = set()
    for box in boxes.tolist():
        x1, y1, x2, y2 = box
        if min(x2 - x1, y2 - y1) < 6:
            continue  # too small for a stable median
        inner = pixels[:, math.ceil(y1) + 1 : math.floor(y2) - 1, math.ceil(x1) + 1 : math.floor(x2) - 1]
        med = np.median(inner.reshape(3, -1), axis=1)
        dists = [float(np.abs(med - np.array(c)).max()) for c in COLOURS[:n_colours]]
        k = min(range(n_colours), key=dists.__getitem__)
        assert dists[k] <= 40, f"box {box} holds colour {med.tolist()}, not a face colour"
        assert k not in used, f"two boxes on face colour {COLOURS[k]}"
        used.add(k)
        tight = mask_box(colour_mask(pixels, COLOURS[k]))
        assert tight is not None
        assert max(abs(a - b) for a, b in zip(tight, box, strict=True)) <= tol_px, (box, tight)
    for k in range(n_colours):
        if k in used:
            continue
        tight = mask_box(colour_mask(pixels, COLOURS[k], tol=20))
        if tight is None or min(tight[2] - tight[0], tight[3] - tight[1]) < 6:
            continue
        touches_border = tight[0] <= 1 or tight[1] <= 1 or tight[2] >= w - 1 or tight[3] >= h - 1
        assert touches_border, f"face {COLOURS[k]} fully visible at {tight} but has no box"


def branch(name: str, **kw: object) -> TrainTransform:
    args = {**ONLY, **BRANCHES[name], "photometric": False, "flip_p": 0.0, "size": SIZE}
    args.update(kw)
    return TrainTransform(**args)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# alignment through every step and the whole pipeline


@pytest.mark.parametrize("name", list(BRANCHES))
def test_each_branch_keeps_boxes_on_their_pixels(name: str) -> None:
    img, boxes = paint(120, 160, FACES)
    t = branch(name, seed=1)
    n_boxes = []
    for _ in range(25):
        out, ob = t(img, boxes)
        assert_aligned(out, ob, len(FACES))
        n_boxes.append(len(ob))
    assert max(n_boxes) >= 1


def test_full_pipeline_keeps_boxes_on_their_pixels_many_seeds() -> None:
    img, boxes = paint(120, 160, FACES)
    for seed in range(40):
        t = TrainTransform(size=SIZE, photometric=False, seed=seed)
        out, ob = t(img, boxes)
        assert_aligned(out, ob, len(FACES))


def test_full_pipeline_with_colour_distortion_shapes_and_bounds() -> None:
    img, boxes = paint(120, 160, FACES)
    t = TrainTransform(size=SIZE, seed=3)
    for _ in range(40):
        out, ob = t(img, boxes)
        assert out.shape == (3, SIZE, SIZE) and out.dtype == torch.uint8
        assert type(out) is torch.Tensor and type(ob) is torch.Tensor
        assert ob.dtype == torch.float32 and ob.shape[1] == 4
        assert (ob >= 0).all() and (ob <= SIZE).all()
        assert ((ob[:, 2:] - ob[:, :2]) >= 2).all()


def test_default_output_size_is_640() -> None:
    img, boxes = paint(120, 160, FACES)
    out, ob = TrainTransform(seed=0)(img, boxes)
    assert out.shape == (3, 640, 640)
    assert (ob <= 640).all()


def test_resize_only_scales_boxes_exactly() -> None:
    img, boxes = paint(120, 160, FACES)
    out, ob = branch("none")(img, boxes)
    expected = boxes * torch.tensor([SIZE / 160, SIZE / 120, SIZE / 160, SIZE / 120])
    torch.testing.assert_close(ob, expected)
    assert_aligned(out, ob, len(FACES))


def test_flip_mirrors_boxes_and_pixels() -> None:
    img, boxes = paint(120, 160, FACES)
    plain, pb = branch("none")(img, boxes)
    flipped, fb = branch("none", flip_p=1.0)(img, boxes)
    torch.testing.assert_close(fb[:, [0, 2]], SIZE - pb[:, [2, 0]])
    torch.testing.assert_close(fb[:, [1, 3]], pb[:, [1, 3]])
    assert torch.equal(flipped, plain.flip(-1))
    assert_aligned(flipped, fb, len(FACES))


def test_photometric_distortion_changes_colours_not_geometry() -> None:
    img, boxes = paint(120, 160, FACES)
    plain, pb = branch("none")(img, boxes)
    changed = 0
    for seed in range(10):
        out, ob = branch("none", photometric=True, seed=seed)(img, boxes)
        torch.testing.assert_close(ob, pb)
        changed += int(not torch.equal(out, plain))
    assert changed >= 5


def test_expansion_shrinks_faces_by_at_most_4_with_mean_padding() -> None:
    img, boxes = paint(120, 160, FACES)
    _, pb = branch("none")(img, boxes)
    t = branch("expand", seed=0)
    ratios = []
    for _ in range(20):
        out, ob = t(img, boxes)
        assert len(ob) >= 3  # expansion keeps every face big enough (the 8 px one may vanish)
        w_ratio = (ob[:, 2] - ob[:, 0]).max() / (pb[:, 2] - pb[:, 0]).max()
        ratios.append(float(w_ratio))
        # padding is the dataset mean
        mean_px = ((out.int() - MEAN_RGB.view(3, 1, 1)).abs().amax(0) <= 1).float().mean()
        if w_ratio < 0.9:
            assert mean_px > 0.1
    assert all(0.25 - 0.02 <= r <= 1.0 + 0.02 for r in ratios)
    assert min(ratios) < 0.6 and max(ratios) > 0.6


def test_square_crop_keeps_centre_inside_faces_and_a_whole_face() -> None:
    img, boxes = paint(120, 160, FACES)
    crop = RandomSquareCrop(min_scale=0.3)
    torch.manual_seed(0)
    sides = set()
    for _ in range(30):
        out_img, out_boxes = crop(*_tv(img, boxes))
        h, w = out_img.shape[-2:]
        assert h == w and 36 <= h <= 120
        sides.add(h)
        kept = out_boxes[(out_boxes[:, 2] > out_boxes[:, 0]) & (out_boxes[:, 3] > out_boxes[:, 1])]
        assert len(kept) >= 1
        # at least one face is whole: same size as in the input
        sizes_in = {(round(b[2] - b[0]), round(b[3] - b[1])) for b in boxes.tolist()}
        sizes_out = {(round(b[2] - b[0]), round(b[3] - b[1])) for b in kept.tolist()}
        assert sizes_in & sizes_out
    assert len(sides) > 5


def test_crop_enlarges_faces() -> None:
    img, boxes = paint(120, 160, FACES)
    _, pb = branch("none")(img, boxes)
    t = branch("crop", seed=0)
    grew = 0
    for _ in range(20):
        _, ob = t(img, boxes)
        grew += int((ob[:, 2] - ob[:, 0]).max() > (pb[:, 2] - pb[:, 0]).max() * 1.2)
    assert grew >= 5


def test_square_crop_keeps_exactly_the_faces_whose_centre_is_inside() -> None:
    img, boxes = paint(120, 160, FACES)
    crop = RandomSquareCrop(min_scale=0.3)
    dropped = 0
    for seed in range(30):
        torch.manual_seed(seed)
        params = crop.make_params(list(_tv(img, boxes)))
        torch.manual_seed(seed)
        _, out = crop(*_tv(img, boxes))
        left, top, side = params["left"], params["top"], params["side"]
        assert 0 <= left <= 160 - side and 0 <= top <= 120 - side
        keep = _centre_inside(boxes, left, top, left + side, top + side)
        assert torch.equal(params["keep"], keep)
        expected = (boxes - torch.tensor([left, top, left, top])).clamp(0, side)
        expected[~keep] = 0
        torch.testing.assert_close(out.as_subclass(torch.Tensor), expected)
        dropped += int((~keep).sum())
    assert dropped > 0


def test_crop_fails_gracefully_when_no_face_fits() -> None:
    img, boxes = paint(120, 160, [[0.0, 0.0, 160.0, 120.0]])  # whole image: never inside a square
    crop = RandomSquareCrop(trials=5)
    out_img, out_boxes = crop(*_tv(img, boxes))
    assert out_img.shape == img.shape and torch.equal(out_boxes.as_subclass(torch.Tensor), boxes)


# --------------------------------------------------------------------------------------------------
# data-anchor-sampling


def test_anchor_sampling_window_contains_the_chosen_face_and_keeps_centres() -> None:
    img, boxes = paint(120, 160, FACES)
    das = DataAnchorSampling(out_size=SIZE)
    for seed in range(30):
        torch.manual_seed(seed)
        params = das.make_params(list(_tv(img, boxes)))
        torch.manual_seed(seed)
        _, out = das(*_tv(img, boxes))
        h, w = params["canvas"]
        scaled = boxes * torch.tensor([w / 160, h / 120] * 2)
        left, top, side = params["left"], params["top"], params["side"]
        keep = _centre_inside(scaled, left, top, left + side, top + side)
        inside = (
            (scaled[:, 0] >= left) & (scaled[:, 1] >= top)
            & (scaled[:, 2] <= left + side) & (scaled[:, 3] <= top + side)
        )
        assert inside.any(), "the window must contain the sampled face"
        assert torch.equal(params["keep"], keep)
        expected = (scaled - torch.tensor([left, top, left, top])).clamp(0, side)
        expected[~keep] = 0
        torch.testing.assert_close(out.as_subclass(torch.Tensor), expected, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize(
    ("face", "allowed"),
    [
        ([60.0, 40.0, 90.0, 70.0], {16, 32, 64}),  # 30 px: nearest anchor 32 -> one above is 64
        ([10.0, 10.0, 110.0, 110.0], {16, 32, 64, 128}),  # 100 px: nearest 128 (capped by SIZE)
        ([70.0, 50.0, 74.0, 54.0], {16, 32}),  # 4 px: nearest 16
    ],
)
def test_anchor_sampling_tiles_face_to_anchor_scales(face: list[float], allowed: set[int]) -> None:
    img, boxes = paint(120, 160, [face])
    t = branch("anchor", seed=0, anchor_sizes=(16, 32, 64, 128, 256, 512))
    seen = set()
    for _ in range(40):
        out, ob = t(img, boxes)
        assert len(ob) == 1
        side = float(((ob[0, 2] - ob[0, 0]) * (ob[0, 3] - ob[0, 1])).sqrt())
        nearest = min(allowed | {256, 512}, key=lambda a: abs(a - side))
        assert abs(side - nearest) <= 0.05 * nearest, side
        assert nearest in allowed
        seen.add(nearest)
        assert_aligned(out, ob, 1, tol_px=3.0)
    assert seen == allowed


def test_anchor_sampling_pads_with_mean_when_shrinking() -> None:
    img, boxes = paint(120, 160, [[10.0, 10.0, 110.0, 110.0]])
    t = DataAnchorSampling(out_size=SIZE, anchor_sizes=(16,))
    torch.manual_seed(0)
    out_img, out_boxes = t(*_tv(img, boxes))
    assert out_img.shape == (3, SIZE, SIZE)  # shrunk by 0.16: 26x19 image inside a 128 window
    side = float(((out_boxes[0, 2:] - out_boxes[0, :2]).prod()).sqrt())
    assert abs(side - 16) < 1.0
    mean_px = ((out_img.int() - MEAN_RGB.view(3, 1, 1)).abs().amax(0) <= 1).float().mean()
    assert mean_px > 0.9


def test_anchor_sampling_keeps_other_faces_by_centre() -> None:
    img, boxes = paint(120, 160, FACES)
    t = branch("anchor", seed=5)
    counts = []
    for _ in range(30):
        out, ob = t(img, boxes)
        assert len(ob) >= 1
        counts.append(len(ob))
        assert_aligned(out, ob, len(FACES), tol_px=3.0)
    assert max(counts) >= 2


def test_anchor_jitter_spreads_sizes() -> None:
    img, boxes = paint(120, 160, [[60.0, 40.0, 90.0, 70.0]])
    t = branch("anchor", seed=0, anchor_jitter=1.0)
    sides = []
    for _ in range(30):
        _, ob = t(img, boxes)
        sides.append(float(((ob[0, 2:] - ob[0, :2]).prod()).sqrt()))
    off_anchor = [s for s in sides if min(abs(s - a) / a for a in (16, 32, 64, 128)) > 0.1]
    assert len(off_anchor) >= 10


# --------------------------------------------------------------------------------------------------
# edge cases, determinism, validation


@pytest.mark.parametrize("name", list(BRANCHES))
def test_image_without_faces(name: str) -> None:
    img, _ = paint(120, 160, [])
    for seed in range(5):
        out, ob = branch(name, seed=seed, photometric=True, flip_p=0.5)(img, torch.zeros(0, 4))
        assert out.shape == (3, SIZE, SIZE)
        assert ob.shape == (0, 4) and ob.dtype == torch.float32


def test_boxes_outside_and_degenerate_are_clipped_or_dropped() -> None:
    img, _ = paint(120, 160, [])
    boxes = torch.tensor([[-20.0, -10.0, 40.0, 30.0], [50.0, 50.0, 50.0, 80.0], [150.0, 100.0, 400, 300]])
    out, ob = branch("none")(img, boxes)
    expected = torch.tensor([[0.0, 0.0, 40.0, 30.0], [150.0, 100.0, 160.0, 120.0]])
    torch.testing.assert_close(ob, expected * torch.tensor([SIZE / 160, SIZE / 120] * 2))


def test_tiny_boxes_are_dropped() -> None:
    img, _ = paint(120, 160, [])
    boxes = torch.tensor([[10.0, 10.0, 12.0, 12.0], [20.0, 20.0, 60.0, 60.0]])  # 2 px -> 1.6 px
    _, ob = branch("none")(img, boxes)
    assert len(ob) == 1


def test_seed_makes_it_deterministic_and_leaves_global_rng_alone() -> None:
    img, boxes = paint(120, 160, FACES)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = [TrainTransform(size=SIZE, seed=7)(img, boxes) for _ in range(3)]
    assert torch.equal(torch.rand(3), expected_next)
    b = [TrainTransform(size=SIZE, seed=7)(img, boxes) for _ in range(3)]
    for (ia, ba), (ib, bb) in zip(a, b, strict=True):
        assert torch.equal(ia, ib) and torch.equal(ba, bb)
    t = TrainTransform(size=SIZE, seed=7)
    outs = [t(img, boxes)[0] for _ in range(6)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # the generator advances
    t.manual_seed(7)
    assert torch.equal(t(img, boxes)[0], outs[0])


def test_without_seed_follows_torch_global_rng() -> None:
    img, boxes = paint(120, 160, FACES)
    t = TrainTransform(size=SIZE)
    torch.manual_seed(5)
    a = t(img, boxes)
    torch.manual_seed(5)
    b = t(img, boxes)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_seed_and_generator_are_exclusive() -> None:
    with pytest.raises(ValueError, match="either seed or generator"):
        TrainTransform(seed=1, generator=torch.Generator())
    g = torch.Generator().manual_seed(3)
    img, boxes = paint(120, 160, FACES)
    a = TrainTransform(size=SIZE, generator=g)(img, boxes)
    b = TrainTransform(size=SIZE, seed=3)(img, boxes)
    assert torch.equal(a[0], b[0])


@pytest.mark.parametrize(
    ("image", "boxes", "match"),
    [
        (torch.zeros(1, 10, 10, dtype=torch.uint8), torch.zeros(0, 4), r"\(3, H, W\)"),
        (torch.zeros(3, 10, 10), torch.zeros(0, 4), "uint8"),
        (torch.zeros(10, 10, 3, dtype=torch.uint8).numpy(), torch.zeros(0, 4), "torch tensor"),
        (torch.zeros(3, 10, 10, dtype=torch.uint8), torch.zeros(2, 5), r"\(N, 4\)"),
        (torch.zeros(3, 10, 10, dtype=torch.uint8), torch.tensor([[0.0, 0.0, float("nan"), 1.0]]), "NaN"),
    ],
)
def test_bad_inputs_raise_value_error(image: object, boxes: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainTransform(size=SIZE)(image, boxes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"p_expand": 0.6, "p_crop": 0.3, "p_anchor_sampling": 0.3}, "<= 1"),
        ({"flip_p": 1.5}, "flip_p"),
        ({"expand_max_ratio": 0.5}, "expand_max_ratio"),
        ({"size": 0}, "size"),
        ({"anchor_sizes": (64, 32)}, "ascending"),
    ],
)
def test_bad_config_raises_value_error(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainTransform(**kwargs)  # type: ignore[arg-type]


def test_boxes_accept_numpy_and_lists() -> None:
    img, boxes = paint(120, 160, FACES)
    a = branch("none")(img, boxes.numpy())
    b = branch("none")(img, boxes.tolist())
    c = branch("none")(tv_tensors.Image(img), boxes)
    assert torch.equal(a[1], b[1]) and torch.equal(a[1], c[1])


def test_eval_transform_resizes_only() -> None:
    img, boxes = paint(120, 160, FACES)
    t = EvalTransform(SIZE)
    out1, b1 = t(img, boxes)
    out2, b2 = t(img, boxes)
    assert torch.equal(out1, out2) and torch.equal(b1, b2)
    torch.testing.assert_close(b1, boxes * torch.tensor([SIZE / 160, SIZE / 120] * 2))
    assert_aligned(out1, b1, len(FACES))
    out, ob = EvalTransform(64)(img, torch.zeros(0, 4))
    assert out.shape == (3, 64, 64) and ob.shape == (0, 4)


def test_fast_photometric_distort_matches_torchvision() -> None:
    from torchvision.transforms import v2

    gen = torch.Generator().manual_seed(0)
    img = tv_tensors.Image(torch.randint(0, 256, (3, 24, 32), dtype=torch.uint8, generator=gen))
    hue_used = 0
    for seed in range(30):
        torch.manual_seed(seed)
        ours = PhotometricDistort()(img)
        torch.manual_seed(seed)
        ref = v2.RandomPhotometricDistort()(img)
        torch.manual_seed(seed)
        hue_used += int(PhotometricDistort().make_params([img])["hue_factor"] is not None)
        assert isinstance(ours, tv_tensors.Image) and ours.dtype == torch.uint8
        diff = (ours.int() - ref.int()).abs()
        assert diff.float().mean() < 1.5 and diff.max() <= 16, seed
    assert hue_used >= 5
