"""Training data throughput: images/s of the section 4.1 augmentation pipeline in worker processes.

Usage::

    .venv/bin/python benchmarks/bench_dataloader.py --workers 1 2 --samples 256
    .venv/bin/python benchmarks/bench_dataloader.py --images DIR --annotations CSV --size 640

Compare the printed images/s with the training loop's (``images_per_s`` in ``metrics.jsonl``):
when the loader is faster, the network (GPU) is the bottleneck, as it should be.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from torch.utils.data import DataLoader

from acfd.data.dataset import DetectionDataset, detection_collate, worker_init_fn
from acfd.data.formats import read_icartoon_csv
from acfd.data.transforms import TrainTransform

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "icartoonface-det"


def main(
    images: Path = typer.Option(SHARED / "images", help="Image folder."),
    annotations: Path = typer.Option(SHARED / "annotations" / "train.csv", help="iCartoonFace CSV."),
    workers: list[int] = typer.Option([1, 2], help="Worker counts to try."),
    samples: int = typer.Option(256, help="Images per measurement."),
    size: int = typer.Option(640, help="Training input side."),
    batch_size: int = typer.Option(16),
) -> None:
    records, _ = read_icartoon_csv(annotations)
    dataset = DetectionDataset(images, records, transform=TrainTransform(size=size))
    typer.echo(f"{len(dataset)} images from {images}, {size}x{size} crops, batch {batch_size}")
    for n in workers:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=n,
                            collate_fn=detection_collate, worker_init_fn=worker_init_fn,
                            persistent_workers=n > 0)
        it = iter(loader)
        next(it)  # start-up (worker spawn, first decode) is not counted
        start, seen = time.perf_counter(), 0
        while seen < samples:
            try:
                batch, _ = next(it)
            except StopIteration:
                it = iter(loader)
                continue
            seen += batch.shape[0]
        rate = seen / (time.perf_counter() - start)
        typer.echo(f"workers={n:<3d} {rate:8.1f} images/s  ({rate / max(1, n):.1f} per worker)")


if __name__ == "__main__":
    typer.run(main)
