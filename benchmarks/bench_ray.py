"""Images/s of ``acfd detect`` with the local engine vs the Ray engine on this machine.

Both runs detect the same files with the same model and write nothing; wall time includes loading
the model (local) and starting Ray plus its actors (Ray), because that is what a user waits for.
On one machine Ray can only add overhead (process start-up, serialisation, Parquet shards); its
benefit is the actor pool spreading over more machines (see docs/SERVING.md).

Usage (niced)::

    nice -n 10 .venv/bin/python benchmarks/bench_ray.py --limit 48 --num-cpus 2
    nice -n 10 .venv/bin/python benchmarks/bench_ray.py --images samples --limit 5
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

SHARED_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "icartoonface-det" / "images"


def main(
    images: Path = typer.Option(SHARED_IMAGES, help="Folder of images (the first --limit, sorted)."),
    limit: int = typer.Option(48, help="How many images."),
    num_cpus: int = typer.Option(2, help="CPUs of the local Ray (actors = num_cpus / cpus-per-actor)."),
    cpus_per_actor: int = typer.Option(1, help="CPUs (torch threads) per Ray actor."),
    batch_size: int = typer.Option(1, help="Images per network call (both engines)."),
    model: str | None = typer.Option(None, help="Model (default: the shipped one)."),
) -> None:
    """Local vs Ray images/s."""
    import ray
    import torch

    from acfd.predict.batch import run_detection
    from acfd.predict.detector import Detector
    from acfd.predict.ray_engine import run_detection_ray
    from acfd.predict.sources import collect_inputs

    files = sorted(p for p in images.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[:limit]
    items, _ = collect_inputs([str(p) for p in files])
    kwargs = {"model": model}
    out = {"images": len(items), "num_cpus": num_cpus, "cpus_per_actor": cpus_per_actor, "torch_threads_local": num_cpus}

    torch.set_num_threads(num_cpus)
    t0 = time.perf_counter()
    local = run_detection(Detector(**kwargs, batch_size=batch_size), items, batch_size=batch_size, progress=False)
    out["local_s"] = round(time.perf_counter() - t0, 1)
    out["local_images_per_s"] = round(len(local.results) / out["local_s"], 2)
    print(json.dumps(out), flush=True)  # kept even if Ray fails to start

    t0 = time.perf_counter()
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    on_ray = run_detection_ray(items, {**kwargs, "batch_size": batch_size}, batch_size=batch_size,
                               cpus_per_actor=cpus_per_actor, progress=False)
    out["ray_s"] = round(time.perf_counter() - t0, 1)
    ray.shutdown()
    out["ray_images_per_s"] = round(len(on_ray.results) / out["ray_s"], 2)
    out["same_keys"] = [k for k, _ in local.results] == [k for k, _ in on_ray.results]
    out["same_face_counts"] = [len(d) for _, d in local.results] == [len(d) for _, d in on_ray.results]
    print(json.dumps(out))


if __name__ == "__main__":
    typer.run(main)
