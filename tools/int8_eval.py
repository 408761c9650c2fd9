"""INT8 against float32 for the shipped detector: dev AP50 and ms per image with the detector's
network and the verifier's network each in float32 or int8 (ONNX Runtime static quantization,
:mod:`acfd.deploy.quantize`), for docs/experiments/detector.md.

    python tools/int8_eval.py [--detector-setting JSON] [--verifier-setting JSON] [--calib-images 128]
        [--sweep [detector] [verifier] [--variants JSON]] [--network-times] [--no-table] [--timing-images 100]
        [--passes 3] [--threads 2] [--no-eval-setting] [--out runs/int8] [--json OUT]

A setting is JSON overriding the defaults of :func:`acfd.deploy.quantize.quantize_onnx`:
``{"calibration": "minmax", "activation": "quint8", "exclude_op_types": ["InstanceNormalization",
"LayerNormalization", "BatchNormalization"], "float_outputs": true, "exclude_prefixes": []}``
(``exclude_prefixes``: node-name prefixes kept in float32, e.g. ``["/head/"]``).

The shipped graphs (``src/acfd/weights/acfd-n.onnx`` and ``acfd-n-verifier.onnx``) are quantized,
both calibrated on ``--calib-images`` images drawn (seed 0) from the TRAINING split: the detector on
its 640 input, the verifier's stage graph (crops cut inside, each with its mirror) on the float32
detector's boxes above the verifier's raw-score floor (the best ``--calib-boxes`` per image). The
quantized files are kept in ``--out`` under a name holding their settings and the source's SHA-256.

Then, for the four combinations of float32 / int8 detector and verifier, on the 300 dev images:

* AP50 at the model card's interactive setting (``acfd eval W --scales 640 --no-flip
  --agreement-iou 0``: ``Detector.for_evaluation(scales="640", flip=False, agreement_iou=None)``)
  and at the evaluation setting (``Detector.for_evaluation()``), scored as ``acfd eval`` scores
  (ground truth clipped to its image, :func:`acfd.evaluation.icartoonface.evaluate_official`);
* ms per image of the default ``Detector()``: the first ``--timing-images`` dev images decoded
  beforehand, one warm-up, median of ``--passes`` passes, the combinations interleaved pass by pass
  in this one process, with the split per step (``Detector.timings``).

The graphs are swapped into the same detectors (``det.backend``, ``det.verifier.session`` and the
NumPy pipeline ``det.pipeline`` that runs them), so everything but the networks is shared; a check
on five images first makes sure that each int8 graph really runs. ``--sweep`` first scores settings of
each network named (``--variants``, by default one change at a time: calibration method, activation
type, excluded operators, float output tail) at the interactive setting, the other network in float32;
``--network-times`` times each network alone, float32 and every int8 graph of it in ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from acfd.data.formats import ImageRecord, clip_to_image, find_images, read_icartoon_csv, read_split
from acfd.data.image_io import load_image
from acfd.deploy.onnx_runner import OnnxRunner
from acfd.deploy.quantize import (
    DEFAULT_EXCLUDED_OP_TYPES,
    detector_calibration_batches,
    qdq_coverage,
    quantize_onnx,
    verifier_calibration_batches,
)
from acfd.detection.verifier_runtime import VerifierSession
from acfd.evaluation.icartoonface import evaluate_official
from acfd.predict.detector import Detector
from acfd.predict.onnx_pipeline import shipped_graphs
from acfd.utils import file_sha256

DATA = Path(os.environ.get("ACFD_DATA", "../shared/data/icartoonface-det"))
CPU = ["CPUExecutionProvider"]


@dataclass(frozen=True)
class Setting:
    """One way of quantizing a network (:func:`acfd.deploy.quantize.quantize_onnx`'s arguments);
    ``exclude_prefixes`` keeps the nodes whose names start with one of them in float32."""

    calibration: str = "minmax"
    activation: str = "quint8"
    exclude_op_types: tuple[str, ...] = DEFAULT_EXCLUDED_OP_TYPES
    float_outputs: bool = True
    exclude_prefixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | None, base: Setting | None = None) -> Setting:
        """A setting from JSON overrides of ``base`` (or of the defaults)."""
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(text or "{}").items()}
        return replace(base or cls(), **values)

    def key(self) -> str:
        excluded = "+".join(sorted(self.exclude_op_types)) or "none"
        prefixes = "-nodes" + hashlib.sha256("|".join(self.exclude_prefixes).encode()).hexdigest()[:8] if self.exclude_prefixes else ""
        return f"{self.calibration}-{self.activation}-ex{excluded}{'-floatout' if self.float_outputs else ''}{prefixes}"

    def label(self) -> str:
        kept = [*self.exclude_op_types, *(f"{p}*" for p in self.exclude_prefixes)]
        return (f"{self.calibration}, {self.activation} activations, float32: {', '.join(kept) or 'nothing'}"
                f"{', the output tail' if self.float_outputs else ''}")


#: The settings ``--sweep`` tries by default: one change at a time from the base setting.
DEFAULT_VARIANTS = ('[{}, {"calibration": "percentile"}, {"activation": "qint8"}, {"exclude_op_types": []}, '
                    '{"float_outputs": false}]')


def _cpu_flags() -> str:
    try:
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return platform.processor()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile")
    return " ".join(f for f in wanted if f in flags) or "none of AVX2 / AVX512 / VNNI / AMX"


def _load(names: list[str], paths: dict[str, Path]) -> list[np.ndarray]:
    return [load_image(paths[n]) for n in names]


class Networks:
    """The float32 sources, the calibration batches and the quantized files of both networks."""

    def __init__(self, out: Path, calib: list[np.ndarray], calib_boxes: int, threads: int) -> None:
        self.out, self.calib, self.threads = out, calib, threads
        out.mkdir(parents=True, exist_ok=True)
        det = Detector(verifier=None)
        # the shipped graphs (their metadata: config, calibration, presets, verifier stacking)
        self.detector_fp32, self.verifier_fp32 = shipped_graphs()
        self.verifier_cfg = VerifierSession(self.verifier_fp32).cfg
        self._det_batches = None
        self._ver_batches = None
        self._calib_boxes = calib_boxes
        self._boxes_det = Detector.for_evaluation(scales="640", flip=False, agreement_iou=None, verifier=None)
        self._pre_det = det

    def detector_batches(self) -> list[dict[str, np.ndarray]]:
        if self._det_batches is None:
            self._det_batches = list(detector_calibration_batches(self._pre_det, self.calib, scale="640"))
        return self._det_batches

    def verifier_batches(self) -> list[dict[str, np.ndarray]]:
        if self._ver_batches is None:
            boxes = [d.boxes[: self._calib_boxes] for d in self._boxes_det.detect_arrays(self.calib)]
            self._ver_batches = list(verifier_calibration_batches(self.calib, boxes, self.verifier_cfg))
        return self._ver_batches

    def quantized(self, which: str, setting: Setting) -> Path:
        source = self.detector_fp32 if which == "detector" else self.verifier_fp32
        path = self.out / f"{which}-int8-{setting.key()}-n{len(self.calib)}-{file_sha256(source)[:8]}.onnx"
        if not path.is_file():
            batches = self.detector_batches() if which == "detector" else self.verifier_batches()
            what = "the 640 input of" if which == "detector" else "the float32 detector's best boxes on"
            start = time.perf_counter()
            nodes = [n.name for n in onnx.load(str(source)).graph.node if n.name.startswith(setting.exclude_prefixes)] \
                if setting.exclude_prefixes else []
            quantize_onnx(source, path, batches, activation_type=setting.activation,
                          calibration_method=setting.calibration, exclude_op_types=setting.exclude_op_types,
                          nodes_to_exclude=nodes, float_outputs=setting.float_outputs,
                          calibrated_on=f"{what} {len(self.calib)} images of the iCartoonFace train split (seed 0)")
            print(f"  quantized {which} ({setting.label()}) in {time.perf_counter() - start:.0f} s -> {path}", flush=True)
        return path

    def detector_runner(self, path: Path) -> OnnxRunner:
        return OnnxRunner(path, providers=CPU, num_threads=self.threads)

    def verifier_session(self, path: Path) -> VerifierSession:
        return VerifierSession(path, self.threads)


def _swap(det: Detector, runner: OnnxRunner, session: VerifierSession) -> None:
    """Run ``det`` with these sessions: its backend and verifier, and the NumPy pipeline it runs
    them in on the CPU (``Detector.pipeline``)."""
    det.backend = runner
    det.verifier.session = session
    if det.pipeline is not None:
        det.pipeline.runner, det.pipeline.verifier = runner, session


def _check_swapped(det: Detector, images: list[np.ndarray], combos: dict[tuple[str, str], tuple[OnnxRunner, VerifierSession]]) -> None:
    """Every combination gives other boxes or scores on a few images than float32 alone: each int8
    graph really runs (int8 never reproduces float32 to the last bit)."""
    found = {}
    for key, (runner, session) in combos.items():
        _swap(det, runner, session)
        found[key] = [np.concatenate([d.boxes.ravel(), d.scores]) for d in det.detect_arrays(images)]
    for key, dets in found.items():
        if key != ("fp32", "fp32") and all(np.array_equal(a, b) for a, b in zip(dets, found[("fp32", "fp32")])):
            raise RuntimeError(f"detector {key[0]} / verifier {key[1]} gives the float32 boxes: the swap did not take")


def _ap50(det: Detector, images: list[np.ndarray], names: list[str], gt: dict[str, ImageRecord]) -> float:
    """AP50 (%) as ``acfd eval`` computes it: per image, boxes in descending score."""
    pred = {}
    for name, dets in zip(names, det.detect_arrays(images, batch_size=1)):
        order = np.argsort(-dets.scores, kind="stable")
        pred[name] = ImageRecord(filename=name, boxes=np.asarray(dets.boxes, np.float32)[order],
                                 scores=np.asarray(dets.scores, np.float32)[order])
    return 100.0 * float(evaluate_official(gt, pred).ap)


def _dev(names: list[str], paths: dict[str, Path]) -> dict[str, ImageRecord]:
    """Dev ground truth clipped to its images (as ``acfd eval --images`` does)."""
    records, _ = read_icartoon_csv(DATA / "annotations" / "train.csv")
    gt = {n: records.get(n, ImageRecord(n)) for n in names}
    clip_to_image(gt, DATA / "images", paths=paths)
    return gt


def _coverage_line(path: Path) -> str:
    cov = qdq_coverage(path)
    return ", ".join(f"{op} {q}/{n}" for op, (q, n) in cov.items() if n and op not in ("Constant", "Identity"))


def _sweep(nets: Networks, networks: list[str], base: Setting, variants: list[Setting], det: Detector,
           dev_images: list[np.ndarray], dev: list[str], gt: dict[str, ImageRecord], report: dict[str, Any]) -> None:
    """AP50 at the interactive setting of each variant of each network, the other in float32."""
    fp32_runner, fp32_session = nets.detector_runner(nets.detector_fp32), nets.verifier_session(nets.verifier_fp32)
    print("\nsweep: AP50 at the interactive setting, the other network in float32 (ms: rough, loaded machine)", flush=True)
    _check_swapped(det, dev_images[:5], {
        ("fp32", "fp32"): (fp32_runner, fp32_session),
        ("int8", "fp32"): (nets.detector_runner(nets.quantized("detector", base)), fp32_session),
        ("fp32", "int8"): (fp32_runner, nets.verifier_session(nets.quantized("verifier", base)))})
    runs = [("none", None)] + [(which, setting) for which in networks for setting in variants]
    for which, setting in runs:
        if which == "detector":
            _swap(det, nets.detector_runner(nets.quantized(which, setting)), fp32_session)
        elif which == "verifier":
            _swap(det, fp32_runner, nets.verifier_session(nets.quantized(which, setting)))
        else:
            _swap(det, fp32_runner, fp32_session)
        det.timings.reset()
        ap = _ap50(det, dev_images, dev, gt)
        ms = det.timings.per_image_ms()
        label = "float32 both" if setting is None else f"{which} int8 ({setting.label()})"
        print(f"  {label}: {ap:.2f}  (forward {ms['forward']:.1f} ms, verify {ms['verify']:.1f} ms)", flush=True)
        report["sweep"].append({"network": which, "setting": setting and setting.label(), "ap50_interactive": ap})


def _table(nets: Networks, det_setting: Setting, ver_setting: Setting, args: argparse.Namespace, interactive: Detector,
           dev_images: list[np.ndarray], dev: list[str], gt: dict[str, ImageRecord], report: dict[str, Any]) -> None:
    """AP50 at both settings and ms per image of the four combinations, printed as one table."""
    det_int8 = nets.quantized("detector", det_setting)
    ver_int8 = nets.quantized("verifier", ver_setting)
    print(f"\ndetector int8 ({det_setting.label()}), nodes in DQ->op->Q groups per op type: {_coverage_line(det_int8)}")
    print(f"verifier int8 ({ver_setting.label()}): {_coverage_line(ver_int8)}", flush=True)
    fp32_runner, fp32_session = nets.detector_runner(nets.detector_fp32), nets.verifier_session(nets.verifier_fp32)
    combos = {
        ("fp32", "fp32"): (fp32_runner, fp32_session),
        ("int8", "fp32"): (nets.detector_runner(det_int8), fp32_session),
        ("fp32", "int8"): (fp32_runner, nets.verifier_session(ver_int8)),
        ("int8", "int8"): (nets.detector_runner(det_int8), nets.verifier_session(ver_int8)),
    }
    _check_swapped(interactive, dev_images[:5], combos)
    rows: dict[tuple[str, str], dict[str, Any]] = {k: {} for k in combos}
    settings = [("interactive", interactive)] + ([] if args.no_eval_setting else [("evaluation", Detector.for_evaluation())])
    for name, det in settings:
        for key, (runner, session) in combos.items():
            _swap(det, runner, session)
            rows[key][f"ap50_{name}"] = _ap50(det, dev_images, dev, gt)
            print(f"  AP50 {name}, detector {key[0]} / verifier {key[1]}: {rows[key][f'ap50_{name}']:.2f}", flush=True)

    timing_images = dev_images[: args.timing_images]
    default = Detector()
    totals: dict[tuple[str, str], list[float]] = {k: [] for k in combos}
    steps: dict[tuple[str, str], list[dict[str, float]]] = {k: [] for k in combos}
    for runner, session in combos.values():  # warm-up
        _swap(default, runner, session)
        default.detect_arrays(timing_images[:2])
    for _ in range(args.passes):
        for key, (runner, session) in combos.items():
            _swap(default, runner, session)
            default.timings.reset()
            start = time.perf_counter()
            default.detect_arrays(timing_images)
            totals[key].append(1000 * (time.perf_counter() - start) / len(timing_images))
            steps[key].append(default.timings.per_image_ms())
    for key in combos:
        rows[key]["ms"] = statistics.median(totals[key])
        rows[key]["steps"] = {s: statistics.median(p[s] for p in steps[key]) for s in ("preprocess", "forward", "postprocess", "verify")}

    print(f"\n{len(dev)} dev images (AP50 %); ms per image of Detector(): {len(timing_images)} dev images, {args.threads} "
          f"threads, median of {args.passes} interleaved passes; CPU flags: {_cpu_flags()}")
    print("| detector | verifier | AP50 interactive | AP50 evaluation | ms per image | preprocess | forward | postprocess | verify |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (d, v), row in rows.items():
        ev = f"{row['ap50_evaluation']:.2f}" if "ap50_evaluation" in row else "-"
        s = row["steps"]
        print(f"| {d} | {v} | {row['ap50_interactive']:.2f} | {ev} | {row['ms']:.1f} | {s['preprocess']:.1f} | "
              f"{s['forward']:.1f} | {s['postprocess']:.1f} | {s['verify']:.1f} |")
        report["table"].append({"detector": d, "verifier": v, **row})


def _network_times(nets: Networks, dev_images: list[np.ndarray], passes: int, report: dict[str, Any]) -> None:
    """Milliseconds per call of each network alone: float32 and every int8 graph of the current
    sources in ``--out``, interleaved pass by pass, on 30 dev images at 640 (the verifier: their
    10 best boxes each)."""
    images = dev_images[:30]
    det = Detector.for_evaluation(scales="640", flip=False, agreement_iou=None, verifier=None)
    inputs = {"detector": list(detector_calibration_batches(det, images, scale="640")),
              "verifier": list(verifier_calibration_batches(images, [d.boxes[:10] for d in det.detect_arrays(images)],
                                                            nets.verifier_cfg))}
    sessions: dict[tuple[str, str], Any] = {}
    for which, source in (("detector", nets.detector_fp32), ("verifier", nets.verifier_fp32)):
        digest = file_sha256(source)[:8]
        for path in [source, *sorted(nets.out.glob(f"{which}-int8-*-{digest}.onnx"))]:
            label = "float32" if path == source else path.stem.split("-int8-")[1].rsplit("-n", 1)[0]
            sessions[which, label] = (nets.detector_runner(path).session if which == "detector"
                                      else nets.verifier_session(path).session)
    times: dict[tuple[str, str], list[float]] = {k: [] for k in sessions}
    for _ in range(passes):
        for (which, label), session in sessions.items():
            start = time.perf_counter()
            for feed in inputs[which]:
                session.run(None, feed)
            times[which, label].append(1000 * (time.perf_counter() - start) / len(inputs[which]))
    print(f"\nnetwork alone, ms per call, median of {passes} interleaved passes:")
    for (which, label), values in times.items():
        print(f"  {which} {label}: {statistics.median(values):.1f}", flush=True)
        report["network_ms"].append({"network": which, "graph": label, "ms": statistics.median(values)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calib-images", type=int, default=128, help="training images to calibrate on")
    parser.add_argument("--calib-boxes", type=int, default=24, help="verifier calibration: best boxes per image")
    parser.add_argument("--detector-setting", default=None, help="JSON overrides of the default Setting for the detector")
    parser.add_argument("--verifier-setting", default=None, help="JSON overrides of the default Setting for the verifier")
    parser.add_argument("--sweep", nargs="*", choices=("detector", "verifier"), default=None,
                        help="first score --variants of these networks (none named: both)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help="JSON list of overrides of each network's setting, for --sweep")
    parser.add_argument("--network-times", action="store_true",
                        help="time each network alone: float32 and every int8 graph of it in --out")
    parser.add_argument("--no-table", action="store_true", help="no table of the four combinations")
    parser.add_argument("--timing-images", type=int, default=100)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-eval-setting", action="store_true", help="skip AP50 at the evaluation setting (slow)")
    parser.add_argument("--out", type=Path, default=Path("runs/int8"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    train = read_split(DATA / "splits" / "train.txt")
    dev = read_split(DATA / "splits" / "dev.txt")
    rng = np.random.default_rng(0)
    calib_names = [train[i] for i in sorted(rng.choice(len(train), size=min(args.calib_images, len(train)), replace=False))]
    if set(calib_names) & set(dev):
        raise SystemExit("calibration images must not be dev images")
    paths = find_images(DATA / "images", calib_names + dev)
    print(f"CPU: {platform.machine()}, {os.cpu_count()} cores, {_cpu_flags()}; onnxruntime {ort.__version__}; "
          f"{args.threads} threads; the machine may be shared (loaded-machine figures)", flush=True)
    calib = _load(calib_names, paths)
    dev_images = _load(dev, paths)
    gt = _dev(dev, paths)
    nets = Networks(args.out, calib, args.calib_boxes, args.threads)
    det_setting = Setting.parse(args.detector_setting)
    ver_setting = Setting.parse(args.verifier_setting)
    interactive = Detector.for_evaluation(scales="640", flip=False, agreement_iou=None)
    report: dict[str, Any] = {"cpu_flags": _cpu_flags(), "calibration_images": len(calib), "sweep": [], "network_ms": [], "table": []}
    if args.sweep is not None:
        networks = args.sweep or ["detector", "verifier"]
        variants = [Setting.parse(json.dumps(v)) for v in json.loads(args.variants)]
        _sweep(nets, networks, Setting(), variants, interactive, dev_images, dev, gt, report)
    if args.network_times:
        _network_times(nets, dev_images, args.passes, report)
    if not args.no_table:
        _table(nets, det_setting, ver_setting, args, interactive, dev_images, dev, gt, report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
