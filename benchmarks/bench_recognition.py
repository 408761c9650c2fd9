"""Recognition speed on this machine: ms per face crop embedded (batch 1 and a batch), and ms per
gallery search as the gallery grows.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_recognition.py
    nice -n 10 .venv/bin/python benchmarks/bench_recognition.py --weights runs/recognition/loss-cosface/model.safetensors

Timings depend on the machine's load (the numbers in docs/RECOGNITION_MODEL_CARD.md were taken
while a detector trained on the same 2 cores).
"""

from __future__ import annotations

import time

import numpy as np
import typer

from acfd.recognition.embedder import Recognizer
from acfd.recognition.gallery import Gallery


def _ms(fn, repeats: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - t) / repeats


def main(
    weights: str = typer.Option(None, help="Recognition weights (default: the shipped model)."),
    batch: int = typer.Option(64, help="Batch size of the batched measurement."),
    repeats: int = typer.Option(5),
    gallery_sizes: list[int] = typer.Option([1_000, 10_000, 100_000]),
) -> None:
    rec = Recognizer(weights)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (rec.input_size, rec.input_size, 3), dtype=np.uint8) for _ in range(batch)]
    typer.echo(f"{rec!r}")
    typer.echo(f"embed batch 1:  {_ms(lambda: rec.embed(crops[:1]), repeats):.2f} ms/crop")
    typer.echo(f"embed batch {batch}: {_ms(lambda: rec.embed(crops), repeats) / batch:.2f} ms/crop")
    queries = rec.embed(crops[:8])
    for n in gallery_sizes:
        g = Gallery("/dev/null", rec.embedding_dim, rec.model_id)
        x = rng.normal(size=(n, rec.embedding_dim)).astype(np.float32)
        g.add([f"id{i % 1000}" for i in range(n)], x / np.linalg.norm(x, axis=1, keepdims=True))
        typer.echo(f"search {n:>7} entries: {_ms(lambda: g.search(queries, k=5), repeats) / len(queries):.3f} ms/face")


if __name__ == "__main__":
    typer.run(main)
