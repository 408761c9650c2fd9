"""Recognition interfaces: crop_face (enlarged rate), Recognizer.embed, PixelEmbedder, Gallery."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acfd.recognition.crops import crop_face, enlarged_box
from acfd.recognition.embedder import PixelEmbedder, Recognizer
from acfd.recognition.gallery import Gallery, GalleryError
from acfd.recognition.model import EmbedderConfig, EmbeddingNet, save_embedder

# --- crops -----------------------------------------------------------------------------------


def test_enlarged_box_doubles_width_and_height_at_rate_one() -> None:
    assert enlarged_box((10, 20, 30, 60), 1.0) == (0.0, 0.0, 40.0, 80.0)
    assert enlarged_box((10, 20, 30, 60), 0.0) == (10.0, 20.0, 30.0, 60.0)
    assert enlarged_box((10, 20, 30, 60), 0.5) == (5.0, 10.0, 35.0, 70.0)


def test_crop_face_inside_image_is_the_enlarged_window() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    image[40:60, 30:50] = 255  # the 20x20 face
    crop = crop_face(image, (30, 40, 50, 60), enlarge_rate=1.0, size=40)  # window 20..60 x 30..70, no resize
    assert crop.shape == (40, 40, 3) and crop.dtype == np.uint8
    assert (crop[10:30, 10:30] == 255).all()  # the face is the centre half
    assert crop[:10].max() == 0 and crop[30:].max() == 0


def test_crop_face_pads_outside_the_image() -> None:
    image = np.full((50, 50, 3), 200, np.uint8)
    crop = crop_face(image, (0, 0, 20, 20), enlarge_rate=1.0, size=40, pad_value=7)  # window -10..30
    assert (crop[:10] == 7).all() and (crop[:, :10] == 7).all()
    assert (crop[10:, 10:] == 200).all()


def test_crop_face_resizes_to_size() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    assert crop_face(image, (50, 30, 90, 100), size=64).shape == (64, 64, 3)
    assert crop_face(image, (50, 30, 51, 31), size=64).shape == (64, 64, 3)  # tiny box upscaled


@pytest.mark.parametrize("box", [(10, 10, 5, 20), (0, 0, 0, 0), (1, 2, 3), (0, 0, float("nan"), 4)])
def test_crop_face_rejects_bad_boxes(box: tuple) -> None:
    with pytest.raises(ValueError, match="box"):
        crop_face(np.zeros((20, 20, 3), np.uint8), box)


def test_crop_face_rejects_non_rgb_arrays() -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        crop_face(np.zeros((20, 20), np.uint8), (1, 1, 5, 5))
    with pytest.raises(ValueError, match="enlarge_rate"):
        crop_face(np.zeros((20, 20, 3), np.uint8), (1, 1, 5, 5), enlarge_rate=-1)


# --- embedders -------------------------------------------------------------------------------


def _tiny_weights(tmp_path, dim: int = 16, seed: int = 0):
    torch.manual_seed(seed)
    cfg = EmbedderConfig(backbone="resnet10t", embedding_dim=dim, input_size=32)
    return save_embedder(EmbeddingNet(cfg).eval(), tmp_path / f"rec-{seed}.safetensors")


def test_recognizer_embeds_unit_rows(tmp_path) -> None:
    rec = Recognizer(_tiny_weights(tmp_path))
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (40, 48, 3), dtype=np.uint8) for _ in range(3)]
    emb = rec.embed(crops)
    assert emb.shape == (3, 16) and emb.dtype == np.float32 and rec.embedding_dim == 16
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(rec.embed(crops[:1]), emb[:1], atol=1e-5)  # batch-independent (eval BN)
    assert rec.embed([]).shape == (0, 16)
    with pytest.raises(ValueError, match="crop 0"):
        rec.embed([np.zeros((8, 8), np.uint8)])


def test_recognizer_model_id_follows_the_weights_content(tmp_path) -> None:
    """The id names what makes embeddings comparable: the tensors and the settings that shape
    them, not thresholds stored beside them (re-tuning those must not orphan a user's galleries)."""
    import dataclasses

    from acfd.recognition.model import load_embedder, save_embedder

    a, b = Recognizer(_tiny_weights(tmp_path, seed=0)), Recognizer(_tiny_weights(tmp_path, seed=1))
    assert a.model_id != b.model_id and a.model_id.startswith("rec-0@")
    assert Recognizer(a.weights_path).model_id == a.model_id
    net, _ = load_embedder(a.weights_path)
    net.cfg = dataclasses.replace(net.cfg, unknown_threshold=0.3, assemble={"dup_sim": 0.9, "candidate_sim": 0.2, "cluster_sim": 0.1})
    retuned = Recognizer(save_embedder(net, tmp_path / "rec-0.safetensors"))
    assert retuned.unknown_threshold == 0.3 and retuned.model_id == a.model_id
    net.cfg = dataclasses.replace(net.cfg, feature="pooled")
    assert Recognizer(save_embedder(net, tmp_path / "rec-0.safetensors")).model_id != a.model_id


def test_recognizer_refuses_other_files(tmp_path) -> None:
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="x.safetensors"):
        Recognizer(bad)
    with pytest.raises(FileNotFoundError, match="missing"):
        Recognizer(tmp_path / "missing.safetensors")


def test_pixel_embedder_matches_identical_crops() -> None:
    px = PixelEmbedder(size=8)
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(2))
    emb = px.embed([a, a, b])
    assert emb.shape == (3, 192)
    assert emb[0] @ emb[1] == pytest.approx(1.0, abs=1e-5) and emb[0] @ emb[2] < 0.5


# --- gallery ---------------------------------------------------------------------------------


def _unit(rows: list[list[float]]) -> np.ndarray:
    x = np.asarray(rows, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_gallery_add_search_save_load(tmp_path) -> None:
    path = tmp_path / "g.gallery"
    g = Gallery.create(path, dim=3, model_id="m1")
    g.add(["ame", "gura"], _unit([[1, 0, 0], [0, 1, 0]]), model_id="m1")
    g.save()
    g2 = Gallery.load(path)
    assert g2.names == ["ame", "gura"] and g2.model_id == "m1" and g2.dim == 3
    g2.add(["ina"], _unit([[0, 0, 1]]))  # adding keeps what is there
    hits = g2.search(_unit([[0.9, 0.1, 0], [0, 0.2, 1]]), k=2)
    assert [h[0][0] for h in hits] == ["ame", "ina"]
    assert hits[0][0][1] == pytest.approx(0.9 / np.hypot(0.9, 0.1), abs=1e-5)
    assert len(hits[0]) == 2 and hits[0][0][1] >= hits[0][1][1]
    assert len(g2.search(_unit([[1, 0, 0]]), k=10)[0]) == 3  # k clamped to the gallery size
    assert g2.remove("ame") == 1 and g2.names == ["gura", "ina"]
    assert g2.search(_unit([[1, 0.1, 0]]))[0][0][0] == "gura"


def test_gallery_refuses_other_models_and_sizes(tmp_path) -> None:
    g = Gallery.create(tmp_path / "g.gallery", dim=3, model_id="m1")
    with pytest.raises(GalleryError, match="built with model m1, not m2"):
        g.add(["a"], _unit([[1, 0, 0]]), model_id="m2")
    with pytest.raises(GalleryError, match="3-d embeddings"):
        g.add(["a"], _unit([[1, 0, 0, 0]]))
    with pytest.raises(GalleryError, match="2 names for 1"):
        g.add(["a", "b"], _unit([[1, 0, 0]]))
    with pytest.raises(GalleryError, match="empty"):
        g.search(_unit([[1, 0, 0]]))


def test_gallery_create_does_not_overwrite_and_load_reports_bad_files(tmp_path) -> None:
    path = tmp_path / "g.gallery"
    Gallery.create(path, 3, "m1").save()
    before = path.read_bytes()
    with pytest.raises(GalleryError, match="already exists"):
        Gallery.create(path, 3, "m1")
    assert path.read_bytes() == before
    junk = tmp_path / "junk.gallery"
    junk.write_bytes(b"garbage")
    with pytest.raises(GalleryError, match="junk.gallery: not a readable acfd gallery"):
        Gallery.load(junk)
    with pytest.raises(GalleryError, match="not found"):
        Gallery.load(tmp_path / "none.gallery")


def test_gallery_save_is_atomic(tmp_path, monkeypatch) -> None:
    path = tmp_path / "g.gallery"
    g = Gallery.create(path, 2, "m1")
    g.add(["a"], _unit([[1, 0]]))
    g.save()
    before = path.read_bytes()
    g.add(["b"], _unit([[0, 1]]))
    import pathlib

    def half_write(self, data: bytes) -> None:  # the disk fills up half-way through the write
        open(self, "wb").write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(pathlib.Path, "write_bytes", half_write)
    with pytest.raises(OSError, match="disk full"):
        g.save()
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["g.gallery"]


# --- the shipped default model -----------------------------------------------------------------


def test_shipped_recognition_model_loads_with_no_arguments() -> None:
    from safetensors import safe_open

    from acfd.recognition.embedder import default_recognition_weights

    path = default_recognition_weights()
    assert path.is_file(), f"{path} is missing"
    assert path.stat().st_size <= 20 * 2**20
    with safe_open(str(path), framework="pt") as f:
        assert all(f.get_tensor(k).dtype in (torch.float16, torch.int64) for k in f.keys())  # fp16 weights
    rec = Recognizer()
    assert rec.model_id.startswith("recognition-cartoon-s@") and 0.0 < rec.unknown_threshold < 1.0
    emb = rec.embed([np.full((rec.input_size, rec.input_size, 3), 90, np.uint8)])
    assert emb.shape == (1, rec.embedding_dim) and np.isfinite(emb).all()
