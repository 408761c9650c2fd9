"""Dev-split figures of a detector (docs/MODEL_CARD.md, docs/experiments/): AP50 per test setting
(official protocol: score > 0.08, top 100 after NMS), and at each setting the score threshold that
maximises F1 (the candidate interactive threshold) with its precision and recall, and seconds per
image.

    python tools/measure_model.py WEIGHTS [--scales 480 640 480,640+flip paper] [--nms-thresh 0.55 0.45]
        [--agreement-iou 0 0.75] [--no-verifier] [--json OUT]

A setting is a scale list as ``acfd detect --scales`` takes it ("640", "640x860", "480,640" merged,
"paper"); ``+flip`` adds the test-time flip. Every setting is measured at every ``--nms-thresh`` and
``--agreement-iou`` (view-agreement rescoring of multi-view merges; 0 = off, single views skip it).
The AP50 of the even- and odd-numbered halves of the split (in its order) shows how much of a
difference between two settings is noise. The verifier beside the weights file is used unless
``--no-verifier``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np

from acfd.data.formats import ImageRecord, read_icartoon_csv, read_split
from acfd.predict.presets import shipped_presets
from acfd.engine.evaluate import evaluate_model
from acfd.predict.scales import parse_scales
from acfd.evaluation.icartoonface import evaluate_official

DATA = Path(os.environ.get("ACFD_DATA", "../shared/data/icartoonface-det"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights")
    parser.add_argument("--scales", nargs="+", default=["480", "640", "800", "960", "640x860", "paper"])
    parser.add_argument("--nms-thresh", nargs="+", type=float, default=[shipped_presets()["interactive"].nms_thresh])
    parser.add_argument("--agreement-iou", nargs="+", type=float, default=[0.0])
    parser.add_argument("--split", default=str(DATA / "splits" / "dev.txt"))
    parser.add_argument("--no-verifier", action="store_true", help="the detector alone")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    gt, _ = read_icartoon_csv(DATA / "annotations" / "train.csv")
    names = read_split(args.split)
    rows = []
    print(f"{'setting':>16} {'NMS':>5} {'agree':>5} {'AP50':>6} {'best-F1 thr':>11} {'F1':>5} {'P':>5} {'R':>5} {'s/img':>6} {'even':>6} {'odd':>6}")
    for spec, nms, agree in itertools.product(args.scales, args.nms_thresh, args.agreement_iou):
        scales, flip = spec.removesuffix("+flip"), spec.endswith("+flip")
        if agree and len(parse_scales(scales)) == 1 and not flip:
            continue  # one view: nothing to agree on
        t0 = time.perf_counter()
        ev = evaluate_model(args.weights, DATA / "images", gt, names, scales=scales, batch_size=4, flip=flip,
                            nms_thresh=nms, agreement_iou=agree or None,
                            **({"verifier": None} if args.no_verifier else {}))
        seconds = (time.perf_counter() - t0) / len(names)
        r = ev.result
        f1 = 2 * r.precision * r.recall / np.maximum(r.precision + r.recall, 1e-9)
        best = int(np.argmax(f1)) if len(f1) else 0
        row = {
            "scales": scales, "flip": flip, "nms_thresh": nms, "agreement_iou": agree or None, "ap50": round(100 * ev.ap50, 2), "num_gt": r.num_gt, "num_det": r.num_det,
            "best_f1": round(float(f1[best]) if len(f1) else 0.0, 4),
            "best_f1_threshold": round(float(r.scores[best]) if len(f1) else 1.0, 3),
            "precision_at_best": round(float(r.precision[best]) if len(f1) else 0.0, 4),
            "recall_at_best": round(float(r.recall[best]) if len(f1) else 0.0, 4),
            "seconds_per_image": round(seconds, 3),
            "verifier": not args.no_verifier,
        }
        for half, part in (("even", names[0::2]), ("odd", names[1::2])):
            kept = [n for n in part if n in ev.predictions]
            truth = {n: gt.get(n, ImageRecord(n)) for n in kept}
            row[f"ap50_{half}"] = round(100 * float(evaluate_official(truth, {n: ev.predictions[n] for n in kept}).ap), 2)
        for thr in (0.3, 0.35, 0.4, 0.45, 0.5):  # precision / recall at round thresholds, for the card
            idx = np.nonzero(r.scores >= thr)[0]
            k = int(idx[-1]) if len(idx) else None
            row[f"p_r_at_{thr}"] = [round(float(r.precision[k]), 4), round(float(r.recall[k]), 4)] if k is not None else [None, 0.0]
        rows.append(row)
        print(f"{spec:>16} {nms:5.2f} {agree:5.2f} {row['ap50']:6.2f} {row['best_f1_threshold']:11.3f} {row['best_f1']:5.3f} "
              f"{row['precision_at_best']:5.3f} {row['recall_at_best']:5.3f} {seconds:6.3f} {row['ap50_even']:6.2f} "
              f"{row['ap50_odd']:6.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"weights": args.weights, "split": args.split, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
