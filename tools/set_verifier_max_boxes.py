"""Choose and store how many boxes of an image the verifier crops at the evaluation setting (the
preset's ``verifier_max_boxes``, in ``NAME-presets.json``) and the logit the others are scored with
(``VerifierStacking.unverified_logit``), without refitting the verifier: its file keeps its
tensors, its stacking gets the logit, and its stage graph beside it (``NAME-verifier.onnx``) is
exported again.

At the evaluation setting every box above the raw-score floor is verified (tens per image, nearly
all background), and the crops cost about 40 % of the CPU time. On the held-out fifth of the
training split (``acfd.engine.verifier_training.held_out``; the same images the gate is chosen on),
the detector's boxes at the evaluation setting are verified once; then for each candidate ``k``
only the best ``k`` of an image (by calibrated score) keep their verifier outputs, the others get
the median logit the verifier gave to boxes beyond rank ``k``. The smallest ``k`` whose held-out
AP50 is within ``--tolerance`` points of verifying every box is stored, or ``--max-boxes`` (the
shipped file: 20, for the CPU budget of the evaluation setting; the tolerance picks 30):

    python tools/set_verifier_max_boxes.py src/acfd/weights/acfd-n.safetensors \\
        --images ../shared/data/icartoonface-det/images \\
        --annotations ../shared/data/icartoonface-det/annotations/train.csv \\
        --split ../shared/data/icartoonface-det/splits/train.txt --max-boxes 20
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.torch import save_file

from acfd.data.formats import ImageRecord, clip_to_image, read_icartoon_csv
from acfd.data.image_io import load_image
from acfd.detection.verifier import METADATA_KEY, load_verifier
from acfd.detection.verifier_runtime import VerifierSession, refine_boxes
from acfd.engine.verifier_training import held_out
from acfd.evaluation.icartoonface import evaluate_official
from acfd.predict.detector import Detector
from acfd.predict.modelfile import verifier_path
from acfd.predict.presets import presets_path
from acfd.utils import atomic_path, atomic_write_text

CANDIDATES = (10, 15, 20, 25, 30, 40, 60)  # --max-boxes must be one of them


class Recording(VerifierSession):
    """The stage as it is, keeping each image's calibrated scores, boxes and verifier outputs."""

    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]]

    def __call__(self, image, boxes, scores, score_thresh=0.0, resized=None, max_boxes=None):  # noqa: ANN001, ANN204
        out = self.outputs(image, np.asarray(boxes, np.float32).reshape(-1, 4), resized)
        self.kept.append((np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32), out,
                          tuple(image.shape[:2])))
        return super().__call__(image, boxes, scores, score_thresh, resized)


def replay(stacking, kept, k, logit):  # noqa: ANN001, ANN201
    """Each image's boxes and scores when only its best ``k`` are verified (``k=None``: all)."""
    dets = []
    for boxes, scores, out, hw in kept:
        top = np.argsort(-scores, kind="stable")[: len(scores) if k is None else k]
        logits = np.full(len(scores), logit)
        logits[top] = out[top, 0]
        new_boxes = boxes.copy()
        new_boxes[top] = refine_boxes(boxes[top], out[top, 1:], stacking.box_step, hw)
        dets.append((new_boxes, stacking.scores(scores, logits).astype(np.float32)))
    return dets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--annotations", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--tolerance", type=float, default=0.5, help="AP50 points that may be lost")
    parser.add_argument("--max-boxes", type=int, default=None,
                        help="store this number instead of the one the tolerance picks (e.g. for a CPU budget)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    target = verifier_path(args.weights)
    stacking = dataclasses.replace(load_verifier(target).stacking, unverified_logit=None)
    names = args.split.read_text().split()
    names = [n for n, keep in zip(names, held_out(names)) if keep]
    records, _ = read_icartoon_csv(args.annotations)
    gt = {n: records[n] for n in names if n in records}
    clip_to_image(gt, args.images)

    det = Detector.for_evaluation(args.weights, threads=args.threads, precision="float32")
    session = det.pipeline.verifier if det.pipeline is not None else None
    assert isinstance(session, VerifierSession), "needs the ONNX pipeline's verifier"
    session.__class__ = Recording
    session.stacking = stacking
    det.pipeline.verifier_max_boxes = None  # type: ignore[union-attr]  # every box, to replay each k
    session.kept = []  # type: ignore[attr-defined]
    per_image = {}
    for name in names:
        before = len(session.kept)  # type: ignore[attr-defined]
        det(load_image(args.images / name))
        if len(session.kept) > before:  # type: ignore[attr-defined]
            per_image[name] = session.kept[-1]  # type: ignore[attr-defined]

    def ap(dets: list) -> float:
        pred = {}
        for name, (boxes, scores) in zip(per_image, dets):
            order = np.argsort(-scores, kind="stable")
            pred[name] = ImageRecord(filename=name, boxes=boxes[order], scores=scores[order])
        return 100.0 * evaluate_official(gt, pred).ap

    kept = list(per_image.values())
    total = sum(len(s) for _, s, _, _ in kept)
    full = ap(replay(stacking, kept, None, 0.0))
    print(f"{len(names)} held-out images, {total} boxes verified at the evaluation setting: AP50 {full:.2f}")
    chosen = None
    for k in CANDIDATES:
        beyond = np.concatenate([out[np.argsort(-s, kind="stable")[k:], 0] for _, s, out, _ in kept])
        if len(beyond) == 0:
            break
        logit = round(float(np.median(beyond.astype(np.float64))), 2)
        got = ap(replay(stacking, kept, k, logit))
        crops = sum(min(k, len(s)) for _, s, _, _ in kept)
        print(f"max_boxes {k}: unverified_logit {logit}, AP50 {got:.2f}, crops {100 * crops / total:.0f} %")
        if (chosen is None and got >= full - args.tolerance and args.max_boxes is None) or k == args.max_boxes:
            chosen = (k, logit)
    if chosen is None:
        print("no candidate keeps the AP50: nothing written")
        return
    with safe_open(str(target), framework="pt") as f:
        meta = json.loads((f.metadata() or {})[METADATA_KEY])
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    new = dataclasses.replace(load_verifier(target).stacking, unverified_logit=chosen[1])
    meta["stacking"] = dataclasses.asdict(new)
    with atomic_path(target) as tmp:
        save_file(state, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})
    stage = target.with_suffix(".onnx")
    if stage.is_file():
        load_verifier(target).export_stage(stage)
    presets_file = presets_path(args.weights)
    presets = json.loads(presets_file.read_text())
    presets["evaluation"]["verifier_max_boxes"] = chosen[0]
    text = re.sub(r"\[\s+([^\[\]]*?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]",
                  json.dumps(presets, indent=2))  # lists on one line, as the file keeps them
    atomic_write_text(presets_file, text + "\n")
    print(f"unverified_logit {chosen[1]}: wrote {target}" + (f" and {stage}" if stage.is_file() else "")
          + f"; evaluation verifier_max_boxes {chosen[0]}: wrote {presets_file}")

if __name__ == "__main__":
    main()
