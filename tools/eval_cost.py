"""CPU seconds per image and dev AP50 of submission-setting variants, for docs/experiments/detector.md.

    python tools/eval_cost.py run [--variant JSON ...] [--threads 1] [--images 0] [--record OUT.npz]
    python tools/eval_cost.py topk RECORD.npz [--k 10 20 30 50] [--floor-logit min]

``run`` runs ``Detector.for_evaluation(threads=..., **variant)`` for each ``--variant`` (JSON of
``Detector`` arguments, e.g. ``'{"precision": "int8", "scales": "480,640"}'``; default: the
shipped setting in float32 and in int8) over the dev images, decoding included, and prints per
variant: CPU seconds per image (``time.process_time``, every thread counted), wall ms, the split
per step (``det.timings``) and the official AP50. ``--record`` keeps, for the first variant, each
image's boxes as the verifier gets them (calibrated scores) and the verifier's outputs (give that
variant ``"verifier_max_boxes": 0`` so that every box is cropped).

``topk`` replays such a record: only the ``k`` best boxes of an image (by calibrated score) are
verified; the others keep their box and get the stacked score with a fixed verifier logit
(``--floor-logit``: ``min``, the lowest logit the verifier gave to any box of the record, or a
number). It prints AP50 and the share of crops saved per ``k``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from acfd.data.formats import ImageRecord, clip_to_image, find_images, read_icartoon_csv, read_split
from acfd.detection.verifier_runtime import VerifierSession, refine_boxes
from acfd.evaluation.icartoonface import evaluate_official
from acfd.predict.detector import Detector

DATA = Path(os.environ.get("ACFD_DATA", "../shared/data/icartoonface-det"))


def _dev(images: int) -> tuple[list[str], dict[str, Path], dict[str, ImageRecord]]:
    names = read_split(DATA / "splits" / "dev.txt")
    names = names[:images] if images else names
    paths = find_images(DATA / "images", names)
    records, _ = read_icartoon_csv(DATA / "annotations" / "train.csv")
    gt = {n: records[n] for n in names if n in records}
    clip_to_image(gt, DATA / "images")
    return names, paths, gt


def _ap(dets: dict[str, tuple[np.ndarray, np.ndarray]], gt: dict[str, ImageRecord]) -> float:
    pred = {}
    for name, (boxes, scores) in dets.items():
        order = np.argsort(-scores, kind="stable")
        pred[name] = ImageRecord(filename=name, boxes=boxes[order], scores=scores[order])
    return 100.0 * evaluate_official(gt, pred).ap


def run(args: argparse.Namespace) -> None:
    names, paths, gt = _dev(args.images)
    variants = [json.loads(v) for v in args.variant] or [{"precision": "float32"}, {"precision": "int8"}]
    for i, variant in enumerate(variants):
        det = Detector.for_evaluation(threads=args.threads, **variant)
        recorded: dict[str, dict[str, np.ndarray]] = {}
        if args.record and i == 0:
            session = det.pipeline.verifier if det.pipeline is not None else None
            assert isinstance(session, VerifierSession), "--record needs the ONNX pipeline's verifier"
            session.__class__ = _recording(recorded)
        for name in names[:2]:  # warm-up
            recorded["current"] = {"name": "warm-up"}  # type: ignore[dict-item]
            det(paths[name])
        recorded.clear()
        det.timings.reset()
        dets = {}
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for name in names:
            recorded["current"] = {"name": name}  # type: ignore[dict-item]
            d = det(paths[name])
            dets[name] = (d.boxes, d.scores)
        cpu, wall = (time.process_time() - cpu0) / len(names), (time.perf_counter() - wall0) / len(names)
        split = ", ".join(f"{k} {v:.0f}" for k, v in det.timings.per_image_ms().items())
        print(f"{json.dumps(variant)}: AP50 {_ap(dets, gt):.2f}, CPU {cpu:.3f} s/image, wall {1000 * wall:.0f} ms, "
              f"{det.precision}; {split}", flush=True)
        recorded.pop("current", None)
        if recorded:
            np.savez_compressed(args.record, **{f"{k}|{n}": v for n, r in recorded.items() for k, v in r.items()},
                                stacking=json.dumps(det.pipeline.verifier.stacking.__dict__))  # type: ignore[union-attr]


def _recording(recorded: dict) -> type:
    """A VerifierSession class that keeps each image's boxes, calibrated scores and verifier outputs."""

    class Recording(VerifierSession):
        def outputs(self, image, boxes, resized=None):  # noqa: ANN001, ANN202
            out = super().outputs(image, boxes, resized)
            name = recorded["current"]["name"]
            recorded.setdefault(name, {}).update(boxes=np.asarray(boxes, np.float32), out=out, hw=np.array(image.shape[:2]))
            return out

        def __call__(self, image, boxes, scores, score_thresh=0.0, resized=None, max_boxes=None):  # noqa: ANN001, ANN202
            result = super().__call__(image, boxes, scores, score_thresh=score_thresh, resized=resized, max_boxes=max_boxes)
            name = recorded["current"]["name"]
            if name in recorded:
                recorded[name]["scores"] = np.asarray(scores, np.float32)
            return result

    return Recording


def topk(args: argparse.Namespace) -> None:
    from acfd.detection.verifier_runtime import VerifierStacking

    data = np.load(args.record)
    stacking = VerifierStacking.from_dict(json.loads(str(data["stacking"])))
    names = sorted({k.split("|", 1)[1] for k in data.files if "|" in k})
    _, _, gt = _dev(0)
    gt = {n: gt[n] for n in names if n in gt}
    logits = np.concatenate([data[f"out|{n}"][:, 0] for n in names])
    floor = float(logits.min()) if args.floor_logit == "min" else float(args.floor_logit)
    total = sum(len(data[f"boxes|{n}"]) for n in names)
    for k in args.k:
        dets, verified = {}, 0
        for n in names:
            boxes, scores, out, hw = data[f"boxes|{n}"], data[f"scores|{n}"], data[f"out|{n}"], tuple(data[f"hw|{n}"])
            order = np.argsort(-scores, kind="stable")
            top, rest = order[:k], order[k:]
            verified += len(top)
            new_boxes = boxes.copy()
            new_scores = stacking.scores(scores, np.full(len(scores), floor)).astype(np.float32)
            new_scores[top] = stacking.scores(scores[top], out[top, 0]).astype(np.float32)
            new_boxes[top] = refine_boxes(boxes[top], out[top, 1:], stacking.box_step, hw)
            del rest
            dets[n] = (new_boxes, new_scores)
        missing = {n: (np.zeros((0, 4), np.float32), np.zeros(0, np.float32)) for n in gt if n not in dets}
        print(f"k={k}: AP50 {_ap({**dets, **missing}, gt):.2f}, crops {verified}/{total} ({100 * verified / total:.0f} %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--variant", action="append", default=[])
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--images", type=int, default=0)
    r.add_argument("--record", type=Path, default=None)
    t = sub.add_parser("topk")
    t.add_argument("record", type=Path)
    t.add_argument("--k", type=int, nargs="+", default=[10, 20, 30, 50, 100])
    t.add_argument("--floor-logit", default="min")
    args = parser.parse_args()
    run(args) if args.command == "run" else topk(args)


if __name__ == "__main__":
    main()
