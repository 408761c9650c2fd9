"""Choose test views offline: save each image's per-view detections once, then score merges of them.

    python tools/view_sweep.py save WEIGHTS OUT.pt [--scales 480,640] [--no-flip] [--split dev.txt]
    python tools/view_sweep.py merge BASE.pt [EXTRA.pt] [--extra-side 960] [--limits 0 96 128]
        [--extra-views 1] [--nms-thresh 0.45] [--agreement-iou 0.75]

``save`` runs ``Detector.for_evaluation`` and keeps every view's boxes before the merge (what
``Detector._merge`` receives). ``merge`` pools BASE's views with EXTRA's first ``--extra-views``
views, each EXTRA box kept only when its side ``sqrt(w * h)`` times ``extra_side / longer image side``
(its size in the extra view's input) is under the limit (0: the extra view is left out), then runs
``merge_multiscale`` and the official scorer, on all images and on each half (even / odd).
This is how the ``960:max128:noflip`` view of the evaluation setting was chosen (docs/experiments/detector.md).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from torchvision.ops import box_area

from acfd.data.formats import ImageRecord, read_icartoon_csv, read_split
from acfd.data.image_io import read_image_size
from acfd.detection.postprocess import merge_multiscale
from acfd.predict.detector import Detector
from acfd.evaluation.icartoonface import evaluate_breakdown

DATA = Path(os.environ.get("ACFD_DATA", "../shared/data/icartoonface-det"))


def save(args: argparse.Namespace) -> None:
    names = read_split(args.split)
    det = Detector.for_evaluation(args.weights, scales=args.scales, flip=args.flip, calibration=None)  # raw views
    views: list[list[dict[str, torch.Tensor]]] = []
    merge = det._merge

    def keep_views(per_view: list[dict[str, torch.Tensor]], image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        views.append([{k: v.clone() for k, v in d.items()} for d in per_view])
        return merge(per_view, image_size)

    det._merge = keep_views  # type: ignore[method-assign]
    for path, res in det.detect_paths([DATA / "images" / n for n in names], progress=True):
        if isinstance(res, Exception):
            raise SystemExit(f"{path}: {res}")
    torch.save({"names": names, "views": views, "detector": repr(det)}, args.out)
    print(f"saved {len(names)} images x {len(views[0])} views to {args.out}")


def merge(args: argparse.Namespace) -> None:
    base = torch.load(args.base)
    extra = torch.load(args.extra) if args.extra else None
    names = base["names"]
    if extra is not None and extra["names"] != names:
        raise SystemExit(f"{args.extra}: not the images of {args.base}")
    gt_all, _ = read_icartoon_csv(DATA / "annotations" / "train.csv")
    gt = {n: gt_all[n] for n in names}
    longer = [max(read_image_size(DATA / "images" / n)) for n in names]  # as the detector saw them (EXIF)
    for limit in args.limits if extra is not None else [0.0]:
        pred = {}
        for i, name in enumerate(names):
            views = list(base["views"][i])
            if limit > 0:
                for v in extra["views"][i][: args.extra_views]:
                    keep = box_area(v["boxes"]).sqrt() * (args.extra_side / longer[i]) < limit
                    views.append({"boxes": v["boxes"][keep], "scores": v["scores"][keep]})
            m = merge_multiscale(views, nms_thresh=args.nms_thresh, max_det=100, agreement_iou=args.agreement_iou or None)
            pred[name] = ImageRecord(name, m["boxes"].numpy(), m["scores"].numpy())
        res = evaluate_breakdown(gt, pred)
        halves = [evaluate_breakdown({n: gt[n] for n in names[h::2]}, {n: pred[n] for n in names[h::2]})["all"].ap for h in (0, 1)]
        print(f"limit {limit:g}: AP50 {100 * res['all'].ap:.2f}  small {100 * res['small'].ap:.2f}  "
              f"halves {100 * halves[0]:.2f} / {100 * halves[1]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("save")
    p.add_argument("weights")
    p.add_argument("out")
    p.add_argument("--scales", default="480,640")
    p.add_argument("--no-flip", dest="flip", action="store_false")
    p.add_argument("--split", default=str(DATA / "splits" / "dev.txt"))
    p.set_defaults(func=save)
    m = sub.add_parser("merge")
    m.add_argument("base")
    m.add_argument("extra", nargs="?")
    m.add_argument("--extra-side", type=float, default=960.0)
    m.add_argument("--limits", type=float, nargs="+", default=[96.0, 128.0, 160.0])
    m.add_argument("--extra-views", type=int, default=1)
    m.add_argument("--nms-thresh", type=float, default=0.45)
    m.add_argument("--agreement-iou", type=float, default=0.75)
    m.set_defaults(func=merge)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
