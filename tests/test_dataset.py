"""Tests of acfd.data.dataset on tiny synthetic JPEGs (and two real samples when ../shared exists)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from acfd.data.dataset import DetectionDataset, detection_collate, worker_init_fn
from acfd.data.formats import ImageRecord
from acfd.data.image_io import load_image
from acfd.data.preview import save_preview
from acfd.data.transforms import EvalTransform, TrainTransform


def write_jpeg(path: Path, w: int, h: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    arr = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=90)


@pytest.fixture()
def tiny(tmp_path: Path) -> tuple[Path, dict[str, ImageRecord]]:
    """Three 40x30 / 50x40 JPEGs; a.jpg and b.jpg annotated, c.jpg without faces."""
    images = tmp_path / "images"
    images.mkdir()
    write_jpeg(images / "a.jpg", 40, 30, 0)
    write_jpeg(images / "b.jpg", 50, 40, 1)
    write_jpeg(images / "c.jpg", 40, 30, 2)
    records = {
        "a.jpg": ImageRecord("a.jpg", np.array([[2, 3, 20, 25]], np.float32)),
        "b.jpg": ImageRecord("b.jpg", np.array([[1, 1, 10, 10], [20, 5, 45, 35]], np.float32)),
    }
    return images, records


def test_samples_with_transform(tiny: tuple[Path, dict[str, ImageRecord]]) -> None:
    images, records = tiny
    ds = DetectionDataset(images, records, names=["a.jpg", "b.jpg", "c.jpg"], transform=EvalTransform(32))
    assert len(ds) == 3
    img, target = ds[1]
    assert img.shape == (3, 32, 32) and img.dtype == torch.uint8
    assert target["image_id"] == "b.jpg" and target["orig_size"] == (40, 50)
    expected = torch.tensor([[1, 1, 10, 10], [20, 5, 45, 35]], dtype=torch.float32) * torch.tensor(
        [32 / 50, 32 / 40] * 2
    )
    torch.testing.assert_close(target["boxes"], expected)
    _, empty = ds[2]  # listed but not annotated: no faces
    assert empty["boxes"].shape == (0, 4) and empty["boxes"].dtype == torch.float32
    assert ds.failed == 0


def test_without_transform_returns_decoded_image_and_record_boxes(
    tiny: tuple[Path, dict[str, ImageRecord]],
) -> None:
    images, records = tiny
    ds = DetectionDataset(images, records)
    assert ds.names == ["a.jpg", "b.jpg"]  # default: annotated images, sorted
    img, target = ds[0]
    assert torch.equal(img, torch.tensor(load_image(images / "a.jpg")).permute(2, 0, 1))
    assert torch.equal(target["boxes"], torch.tensor([[2.0, 3, 20, 25]]))
    assert ds[-1][1]["image_id"] == "b.jpg"
    with pytest.raises(IndexError):
        ds[2]


def test_train_transform_through_dataset(tiny: tuple[Path, dict[str, ImageRecord]]) -> None:
    images, records = tiny
    ds = DetectionDataset(images, records, transform=TrainTransform(size=64, seed=0))
    for i in range(len(ds)):
        img, target = ds[i]
        assert img.shape == (3, 64, 64)
        b = target["boxes"]
        assert b.dtype == torch.float32 and ((b >= 0) & (b <= 64)).all()


def test_unreadable_images_are_logged_counted_and_replaced(
    tiny: tuple[Path, dict[str, ImageRecord]], caplog: pytest.LogCaptureFixture
) -> None:
    images, records = tiny
    (images / "bad.jpg").write_bytes(b"not a jpeg at all")
    names = ["bad.jpg", "missing.jpg", "a.jpg"]
    ds = DetectionDataset(images, records, names=names, transform=EvalTransform(16))
    with caplog.at_level(logging.WARNING, logger="acfd.data.dataset"):
        img, target = ds[0]
    assert target["image_id"] == "a.jpg" and img.shape == (3, 16, 16)
    assert ds.failed == 2
    assert "bad.jpg" in caplog.text and "missing.jpg" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="acfd.data.dataset"):
        assert ds[1][1]["image_id"] == "a.jpg"
    assert ds.failed == 2 and caplog.text == ""  # known-bad images are skipped quietly


def test_all_unreadable_raises_value_error(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"")
    ds = DetectionDataset(tmp_path, {}, names=["x.jpg"])
    with pytest.raises(ValueError, match="none of the 1 images"):
        ds[0]


def test_bad_construction_raises_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="images folder not found"):
        DetectionDataset(tmp_path / "nope", {})
    with pytest.raises(ValueError, match="no images"):
        DetectionDataset(tmp_path, {})


def test_from_csv_with_split_logs_problems(
    tiny: tuple[Path, dict[str, ImageRecord]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images, _ = tiny
    csv = tmp_path / "train.csv"
    csv.write_text("a.jpg,2,3,20,25\nb.jpg,1,1,10,10\nb.jpg,30,5,20,35\n")  # last row: x2 < x1
    split = tmp_path / "split.txt"
    split.write_text("b.jpg\nc.jpg\n")
    with caplog.at_level(logging.INFO):
        ds = DetectionDataset.from_csv(images, csv, split_path=split, transform=EvalTransform(20))
    assert ds.names == ["b.jpg", "c.jpg"]
    assert "train.csv:3" in caplog.text  # the bad row, with file and line
    assert "1 of 2 images have no boxes" in caplog.text
    _, tb = ds[0]
    assert tb["boxes"].shape == (1, 4)
    assert ds[1][1]["boxes"].shape == (0, 4)
    all_rows = DetectionDataset.from_csv(images, csv)
    assert all_rows.names == ["a.jpg", "b.jpg"]


def test_from_csv_missing_file_raises_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing.csv"):
        DetectionDataset.from_csv(tmp_path, tmp_path / "nothing.csv")


def test_detection_collate() -> None:
    batch = [
        (torch.zeros(3, 8, 8, dtype=torch.uint8), {"boxes": torch.zeros(0, 4), "image_id": "a"}),
        (torch.ones(3, 8, 8, dtype=torch.uint8), {"boxes": torch.ones(2, 4), "image_id": "b"}),
    ]
    images, targets = detection_collate(batch)
    assert images.shape == (2, 3, 8, 8) and images.dtype == torch.uint8
    assert [t["image_id"] for t in targets] == ["a", "b"] and targets[1]["boxes"].shape == (2, 4)
    with pytest.raises(ValueError, match="different sizes"):
        detection_collate([batch[0], (torch.zeros(3, 9, 8, dtype=torch.uint8), batch[1][1])])
    with pytest.raises(ValueError, match="empty batch"):
        detection_collate([])


def _epoch_images(loader: DataLoader) -> list[torch.Tensor]:
    return [img for images, _ in loader for img in images]


def test_worker_seeding_is_reproducible_and_distinct(tiny: tuple[Path, dict[str, ImageRecord]]) -> None:
    images, records = tiny
    # the same image four times: any difference between samples comes from the augmentation
    ds = DetectionDataset(images, records, names=["b.jpg"] * 4, transform=TrainTransform(size=24, seed=0))

    def loader(seed: int, dataset: torch.utils.data.Dataset = ds) -> DataLoader:
        return DataLoader(
            dataset, batch_size=1, num_workers=2, collate_fn=detection_collate,
            worker_init_fn=worker_init_fn, generator=torch.Generator().manual_seed(seed),
        )

    first = loader(1)
    run_a, run_a2 = _epoch_images(first), _epoch_images(first)
    run_b = _epoch_images(loader(1))
    assert all(torch.equal(x, y) for x, y in zip(run_a, run_b, strict=True))  # reproducible
    # worker 0 serves samples 0, 2 and worker 1 samples 1, 3: reseeded workers differ
    assert not torch.equal(run_a[0], run_a[1])
    assert any(not torch.equal(x, y) for x, y in zip(run_a, run_a2, strict=True))  # epochs differ
    sub = _epoch_images(loader(1, Subset(ds, [0, 1])))  # wrappers are unwrapped
    assert not torch.equal(sub[0], sub[1])


def test_worker_init_fn_outside_worker_is_a_no_op() -> None:
    worker_init_fn(0)


def test_real_data_two_train_samples(det_data_dir: Path) -> None:
    split = det_data_dir / "splits" / "train.txt"
    ds = DetectionDataset.from_csv(
        det_data_dir / "images", det_data_dir / "annotations" / "train.csv", split_path=split,
        transform=TrainTransform(size=640, seed=0),
    )
    assert len(ds) == len(split.read_text().split())
    images, targets = detection_collate([ds[0], ds[1]])
    assert images.shape == (2, 3, 640, 640) and images.dtype == torch.uint8
    for t in targets:
        b = t["boxes"]
        assert b.dtype == torch.float32 and b.shape[1] == 4
        assert ((b >= 0) & (b <= 640)).all()
    assert ds.failed == 0


# --------------------------------------------------------------------------------------------------
# preview


def test_save_preview_grid(tiny: tuple[Path, dict[str, ImageRecord]], tmp_path: Path) -> None:
    images, _ = tiny
    for name in ("a.jpg", "b.jpg", "c.jpg"):  # black images: drawn boxes are the only green pixels
        Image.new("RGB", Image.open(images / name).size).save(images / name)
    csv = tmp_path / "ann.csv"
    csv.write_text("a.jpg,2,3,20,25\nb.jpg,1,1,30,30\nc.jpg,5,5,35,25\n")
    out = save_preview(images, csv, tmp_path / "out" / "grid.png", n=4, seed=1, size=32)
    assert out == tmp_path / "out" / "grid.png"
    arr = np.asarray(Image.open(out))
    assert arr.shape == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2, 3)  # 2x2 tiles, 2 px padding
    green = (arr[..., 1] == 255) & (arr[..., 0] == 0) & (arr[..., 2] == 0)
    assert green.sum() > 20  # boxes are drawn
    assert sorted(p.name for p in out.parent.iterdir()) == ["grid.png"]  # no temp file left
    again = save_preview(images, csv, tmp_path / "again.png", n=4, seed=1, size=32)
    assert again.read_bytes() == out.read_bytes()  # deterministic
    other = save_preview(images, csv, tmp_path / "other.png", n=4, seed=2, size=32)
    assert other.read_bytes() != out.read_bytes()


def test_save_preview_split_name_more_samples_than_images(
    tiny: tuple[Path, dict[str, ImageRecord]], tmp_path: Path
) -> None:
    images, _ = tiny
    csv = tmp_path / "ann.csv"
    csv.write_text("a.jpg,2,3,20,25\n")
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "dev.txt").write_text("a.jpg\nc.jpg\n")
    out = save_preview(images, csv, tmp_path / "p.png", n=5, size=16, split="dev")
    assert np.asarray(Image.open(out)).shape == (2 * 16 + 3 * 2, 3 * 16 + 4 * 2, 3)  # 3 per row
    with pytest.raises(ValueError, match="split file not found"):
        save_preview(images, csv, tmp_path / "p.png", split="nope")
    with pytest.raises(ValueError, match="n must be"):
        save_preview(images, csv, tmp_path / "p.png", n=0)
