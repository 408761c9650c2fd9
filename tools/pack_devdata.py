"""Pack ../shared/data/icartoonface-det into one folder small enough to travel to the GPU machine.

The device tool moves at most 64 MiB per call, the tracked files (about 13 MiB) included, so every
image is re-encoded as WebP (quality 40: about 40 MiB for the 2,525 images; quality 60 made 52 MiB,
too much with the tree) under its original file name; PIL and OpenCV decode by content, so the CSVs
and splits need no change. Numbers reported in docs/MODEL_CARD.md are re-measured locally on the
original images.  Usage: python tools/pack_devdata.py [SRC] [DEST]
"""

from __future__ import annotations

import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

QUALITY = 40


def _pack(args: tuple[Path, Path]) -> int:
    src, dst = args
    with Image.open(src) as im:
        im.convert("RGB").save(dst, "WEBP", quality=QUALITY, method=4)
    return dst.stat().st_size


def main() -> None:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/icartoonface-det")
    dest = Path(sys.argv[2] if len(sys.argv) > 2 else ".devdata/pack")
    (dest / "images").mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "annotations" / "train.csv", dest / "train.csv")
    for split in ("train", "dev"):
        shutil.copy(src / "splits" / f"{split}.txt", dest / f"{split}.txt")
    jobs = [(p, dest / "images" / p.name) for p in sorted((src / "images").iterdir())]
    with ProcessPoolExecutor() as pool:
        total = sum(pool.map(_pack, jobs, chunksize=32))
    print(f"{len(jobs)} images, {total / 2**20:.1f} MiB in {dest}")


if __name__ == "__main__":
    main()
