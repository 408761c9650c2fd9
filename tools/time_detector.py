"""Milliseconds per image of the shipped ``Detector()`` on real dev images, with and without the
second-stage verifier, per step (``Detector.timings``), for docs/MODEL_CARD.md and docs/experiments/.

    python tools/time_detector.py [--images 40] [--passes 3] [--threads 2] [--flip] [--verifier PATH ...]

Settings, run interleaved pass by pass (the median pass is reported): ``verifier`` (the default
detector: ONNX Runtime for both networks), ``verifier-eager`` (the verifier's network on PyTorch),
``none`` (``verifier=None``); with ``--flip`` also ``verifier-flip`` and ``none-flip`` (test-time
flip on); each ``--verifier PATH`` adds a setting with that verifier file instead of the shipped one
(for comparing a candidate before shipping it). Decoding is not timed (the images are read first).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from acfd.data.image_io import load_image
from acfd.predict.detector import Detector

DATA = Path(os.environ.get("ACFD_DATA", "../shared/data/icartoonface-det"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40, help="the first N images of the dev split")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--flip", action="store_true", help="also time the test-time flip")
    parser.add_argument("--verifier", nargs="*", default=[], help="other verifier files for the shipped weights")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = (DATA / "splits" / "dev.txt").read_text().split()[: args.images]
    images = [load_image(DATA / "images" / n) for n in names]
    detectors = {"verifier": Detector(), "verifier-eager": Detector(), "none": Detector(verifier=None)}
    if args.flip:
        detectors |= {"verifier-flip": Detector(flip=True), "none-flip": Detector(verifier=None, flip=True)}
    detectors |= {Path(path).stem: Detector(verifier=path) for path in args.verifier}
    eager = detectors["verifier-eager"].verifier
    if eager is not None:
        eager.session = None  # its network back on PyTorch
    totals: dict[str, list[float]] = {k: [] for k in detectors}
    steps: dict[str, list[dict[str, float]]] = {k: [] for k in detectors}
    faces: dict[str, int] = {}
    for d in detectors.values():
        d.detect_arrays(images[:2])  # warm-up
    for _ in range(args.passes):
        for key, d in detectors.items():
            d.timings.reset()
            start = time.perf_counter()
            found = d.detect_arrays(images)
            totals[key].append(1000 * (time.perf_counter() - start) / len(images))
            steps[key].append(d.timings.per_image_ms())
            faces[key] = sum(len(f) for f in found)
    print(f"{len(images)} dev images, {args.threads} threads, median of {args.passes} interleaved passes (ms per image)")
    for key in detectors:
        parts = {s: round(statistics.median(p[s] for p in steps[key]), 1) for s in steps[key][0] if s != "load"}
        print(f"{key:>22}: total {statistics.median(totals[key]):6.1f}  {parts}  faces at 0.35: {faces[key]}")


if __name__ == "__main__":
    main()
