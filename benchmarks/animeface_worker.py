"""animeface (nagadomi's animeface-2009, ``pip install animeface``) in a Python of its own, for
bench_speed.py: reads image paths on stdin, one a line, and writes one JSON line per image: the
faces' boxes (x1, y1, x2, y2), their likelihoods, and this process's CPU seconds so far.

animeface 2.0.3's C extension reads Pillow's internal image structure, which Pillow 12 changed: with
Pillow 12 or later it finds no face at all, without an error. bench_speed.py runs this script with
``--animeface-python PATH``, a Python that has animeface and Pillow < 12. Needs nothing else.
"""

from __future__ import annotations

import json
import sys
import time

import animeface
from PIL import Image


def main() -> None:
    for line in sys.stdin:
        with Image.open(line.rstrip("\n")) as image:
            faces = animeface.detect(image.convert("RGB"))
        boxes = [[f.face.pos.x, f.face.pos.y, f.face.pos.x + f.face.pos.width, f.face.pos.y + f.face.pos.height]
                 for f in faces]
        reply = {"boxes": boxes, "scores": [f.likelihood for f in faces], "cpu": time.process_time()}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
