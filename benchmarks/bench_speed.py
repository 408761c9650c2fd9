"""acfd against the cascade detectors: ms per image, decoding included, and dev AP50, on the same
images and the same machine; prints one markdown table.

Usage::

    nice -n 5 .venv/bin/python benchmarks/bench_speed.py                 # all 300 dev images
    nice -n 5 .venv/bin/python benchmarks/bench_speed.py --images 50 --passes 1
    .venv/bin/python benchmarks/bench_speed.py --precisions float32,int8   # both, side by side

Rows:

* acfd through the Python API, one process, warm: ``Detector()`` (the default: calibration and
  verifier) one image per call, the same over the whole set in one call
  (``Detector().detect_paths(paths)``: decoding ahead, one image per thread at a time,
  :mod:`acfd.predict.parallel`), ``Detector(verifier=None)`` and the submission setting ``Detector.for_evaluation()``
  (also in CPU seconds per image, ``time.process_time``, every thread of the process counted),
  each with the split per step from ``det.timings`` (``load`` is the decoding). Their AP50 is the
  official scorer's (``acfd eval``) over the same images; for the default settings it is the model
  card's interactive AP50: the same network and verifier with every box kept
  (``Detector.for_evaluation(scales="640", flip=False, agreement_iou=None, verifier_max_boxes=None)``), since the default's
  threshold cuts the precision-recall curve short.
* lbpcascade_animeface (nagadomi, MIT; the XML is in benchmarks/assets): OpenCV
  ``detectMultiScale`` on the equalised grey image with its README's parameters; AP50 scores each
  box by ``detectMultiScale3``'s level weight.
* animeface (``pip install animeface``: nagadomi's animeface-2009), when installed; AP50 scores each
  box by its likelihood. Its C extension reads Pillow's internal image structure and finds no face
  with Pillow 12 or later, so with a newer Pillow here its row needs ``--animeface-python PATH``, a
  Python with animeface and Pillow < 12, which runs it in a process of its own
  (benchmarks/animeface_worker.py; its CPU time is that process's). Neither cascade is a dependency
  of acfd.

Timing: each setting is warmed up first, then the settings run one after another (their order
rotated each pass) over all the images, ``--passes`` times; the table gives the median pass. The
machine (CPU model, the instruction sets that matter to ONNX Runtime) and the load average before
and after are printed, so that a busy machine shows.
"""

from __future__ import annotations

import inspect
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import typer

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ACFD_SHARED", REPO.parent / "shared")) / "data" / "icartoonface-det"
LBPCASCADE = Path(__file__).resolve().parent / "assets" / "lbpcascade_animeface.xml"
STEPS = ("load", "preprocess", "forward", "postprocess", "verify")

#: ``run(path) -> (boxes (N, 4) x1 y1 x2 y2, scores (N,))``
Runner = Callable[[Path], tuple[np.ndarray, np.ndarray]]
#: ``run_all(paths) -> [(boxes, scores), ...]`` in the order of ``paths``
SetRunner = Callable[[Sequence[Path]], list[tuple[np.ndarray, np.ndarray]]]


@dataclass
class Setting:
    """One row: how to run it, and what was measured."""

    name: str
    run: Runner
    detector: object | None = None  # an acfd Detector, whose timings give the split per step
    ap_run: Runner | None = None  # another run for AP50 (None: the timed run's detections)
    passes: list[tuple[float, float, dict[str, float]]] = field(default_factory=list)  # (ms, cpu ms, split)
    detections: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    ap50: float | None = None
    cpu_clock: Callable[[], float] = time.process_time  # CPU seconds of the process that runs it
    run_all: SetRunner | None = None  # timed over all the images in one call instead of one by one

    def median_pass(self) -> tuple[float, float, dict[str, float]]:
        ordered = sorted(self.passes, key=lambda p: p[0])
        return ordered[(len(ordered) - 1) // 2]


# -- the machine -----------------------------------------------------------------------------------


def machine_line() -> str:
    """CPU model, cores this process may use, and the instruction sets ONNX Runtime's kernels use."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8") if f in flags]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores usable, flags: {' '.join(shown) or 'none of avx2/avx512/amx'}"


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min)"


# -- the detectors ---------------------------------------------------------------------------------


def acfd_runner(det: object) -> Runner:
    def run(path: Path) -> tuple[np.ndarray, np.ndarray]:
        d = det(path)  # type: ignore[operator]
        return d.boxes, d.scores

    return run


def acfd_set_runner(det: object) -> SetRunner:
    """All the images in one call, ``Detector.detect_paths`` (decoding ahead on a thread, several
    images at once: :mod:`acfd.predict.parallel`)."""
    def run_all(paths: Sequence[Path]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for path, d in det.detect_paths(paths, progress=False):  # type: ignore[attr-defined]
            if isinstance(d, Exception):
                raise d
            out.append((d.boxes, d.scores))
        return out

    return run_all


def make_detector(threads: int, **kwargs: object) -> object:
    """An acfd ``Detector`` (``for_evaluation`` when ``evaluation`` is given) with ``threads``."""
    from acfd.predict.detector import Detector

    evaluation = bool(kwargs.pop("evaluation", False))
    if "threads" in inspect.signature(Detector).parameters:
        kwargs["threads"] = threads
    return Detector.for_evaluation(**kwargs) if evaluation else Detector(**kwargs)


def lbpcascade_runners(xml: Path) -> tuple[Runner, Runner]:
    """(timed run: ``detectMultiScale`` as nagadomi's README, AP run: the same boxes scored by
    ``detectMultiScale3``'s level weights)."""
    cascade = cv2.CascadeClassifier(str(xml))
    if cascade.empty():
        raise ValueError(f"{xml}: OpenCV cannot read this cascade")
    params = {"scaleFactor": 1.1, "minNeighbors": 5, "minSize": (24, 24)}

    def grey(path: Path) -> np.ndarray:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{path}: OpenCV cannot read this image")
        return cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))

    def to_xyxy(rects: Sequence) -> np.ndarray:
        r = np.asarray(rects, np.float32).reshape(-1, 4)
        return np.concatenate([r[:, :2], r[:, :2] + r[:, 2:]], axis=1)

    def run(path: Path) -> tuple[np.ndarray, np.ndarray]:
        boxes = to_xyxy(cascade.detectMultiScale(grey(path), **params))
        return boxes, np.ones(len(boxes), np.float32)

    def scored(path: Path) -> tuple[np.ndarray, np.ndarray]:
        rects, _, weights = cascade.detectMultiScale3(grey(path), outputRejectLevels=True, **params)
        boxes = to_xyxy(rects)
        scores = np.asarray(weights, np.float32).reshape(-1)
        return boxes, scores if len(scores) == len(boxes) else np.ones(len(boxes), np.float32)

    return run, scored


#: animeface 2.0.3 finds no face with this Pillow or a later one (see the module docstring).
ANIMEFACE_PILLOW_LIMIT = 12
ANIMEFACE_WORKER = Path(__file__).resolve().parent / "animeface_worker.py"


def animeface_here() -> tuple[Runner | None, str]:
    """animeface in this process, or ``None`` and the reason it cannot run here."""
    import PIL
    from PIL import Image

    try:
        import animeface
    except ImportError:
        return None, "animeface is not installed (pip install animeface); its row is left out"
    if int(PIL.__version__.split(".")[0]) >= ANIMEFACE_PILLOW_LIMIT:
        return None, (f"animeface finds no face with Pillow >= {ANIMEFACE_PILLOW_LIMIT} (here {PIL.__version__}): its "
                      "row is left out; give --animeface-python PATH, a Python with animeface and Pillow < 12")

    def run(path: Path) -> tuple[np.ndarray, np.ndarray]:
        with Image.open(path) as image:
            faces = animeface.detect(image.convert("RGB"))
        boxes = [[f.face.pos.x, f.face.pos.y, f.face.pos.x + f.face.pos.width, f.face.pos.y + f.face.pos.height]
                 for f in faces]
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray([f.likelihood for f in faces], np.float32)

    return run, ""


class AnimefaceWorker:
    """animeface in another Python (:data:`ANIMEFACE_WORKER`), one image at a time over a pipe;
    :meth:`cpu_seconds` is that process's CPU time as of its last answer."""

    def __init__(self, python: str) -> None:
        self.process = subprocess.Popen([python, str(ANIMEFACE_WORKER)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1)
        self.cpu = 0.0

    def __call__(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{path}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the animeface worker ({self.process.args[0]}) stopped; its error is above")
        reply = json.loads(line)
        self.cpu = float(reply["cpu"])
        return np.asarray(reply["boxes"], np.float32).reshape(-1, 4), np.asarray(reply["scores"], np.float32)

    def cpu_seconds(self) -> float:
        return self.cpu

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


# -- measuring -------------------------------------------------------------------------------------


def timed_pass(setting: Setting, paths: Sequence[Path], keep: bool) -> None:
    timings = getattr(setting.detector, "timings", None)
    if timings is not None:
        timings.reset()
    wall = cpu = 0.0
    if setting.run_all is not None:
        w, c = time.perf_counter(), setting.cpu_clock()
        outs = setting.run_all(paths)
        wall, cpu = time.perf_counter() - w, setting.cpu_clock() - c
        if keep:
            setting.detections.update({path.name: out for path, out in zip(paths, outs)})
    for path in paths if setting.run_all is None else ():
        w, c = time.perf_counter(), setting.cpu_clock()
        out = setting.run(path)
        wall += time.perf_counter() - w
        cpu += setting.cpu_clock() - c
        if keep:
            setting.detections[path.name] = out
    split = timings.per_image_ms() if timings is not None else {}
    setting.passes.append((1000 * wall / len(paths), 1000 * cpu / len(paths), split))


def average_precision(setting: Setting, paths: Sequence[Path], gt: dict) -> float:
    from acfd.data.formats import ImageRecord
    from acfd.evaluation.icartoonface import evaluate_official

    detections = setting.detections
    if setting.ap_run is not None:
        detections = {p.name: setting.ap_run(p) for p in paths}
    pred = {}
    for name, (boxes, scores) in detections.items():
        order = np.argsort(-scores, kind="stable")  # as a submission CSV is scored
        pred[name] = ImageRecord(filename=name, boxes=boxes[order], scores=scores[order])
    return 100.0 * evaluate_official(gt, pred).ap


def ground_truth(annotations: Path, images: Path, names: Sequence[str]) -> dict:
    """The faces of ``names``, clipped to their images as ``acfd eval`` does."""
    from acfd.data import formats

    records, _ = formats.read_icartoon_csv(annotations)
    gt = {k: v for k, v in records.items() if k in set(names)}
    formats.clip_to_image(gt, images)
    return gt


def measure(settings: Sequence[Setting], paths: Sequence[Path], passes: int) -> None:
    """Warm each setting up, then time ``passes`` passes over ``paths``, the settings in turn (their
    order rotated each pass); the first pass's detections are kept for AP50."""
    for s in settings:  # sessions, caches, first-call allocations
        for path in paths[:2]:
            s.run(path)
    for p in range(passes):
        for s in settings[p % len(settings):] + settings[: p % len(settings)]:
            timed_pass(s, paths, keep=p == 0)
    typer.echo(f"load average after timing: {load_line()}")


# -- the table -------------------------------------------------------------------------------------


def format_table(settings: Sequence[Setting], passes: int) -> str:
    rows = [
        f"| setting | ms per image (median of {passes}) | CPU ms per image | "
        + " / ".join(STEPS) + " (ms) | AP50 |",
        "|---|---|---|---|---|",
    ]
    for s in settings:
        ms, cpu, split = s.median_pass()
        steps = " / ".join(f"{split[k]:.1f}" for k in STEPS) if split else "-"
        ap = f"{s.ap50:.2f}" if s.ap50 is not None else "-"
        rows.append(f"| {s.name} | {ms:.1f} | {cpu:.1f} | {steps} | {ap} |")
    return "\n".join(rows)


def main(
    images: int = typer.Option(0, help="Use the first N images of the split (0: all)."),
    passes: int = typer.Option(3, min=1, help="Timed passes over the images; the median is shown."),
    threads: int = typer.Option(2, min=1, help="Threads of every detector (torch, ONNX Runtime, OpenCV)."),
    lbpcascade: Path = typer.Option(LBPCASCADE, help="lbpcascade_animeface.xml."),
    split: str = typer.Option(str(DATA / "splits" / "dev.txt"), help="Image names, one a line ('' for every annotated image)."),
    images_dir: Path = typer.Option(DATA / "images", help="Folder of the images."),
    annotations: Path = typer.Option(DATA / "annotations" / "train.csv", help="Ground truth (iCartoonFace CSV)."),
    ap: bool = typer.Option(True, help="Also measure AP50 (two more acfd runs over the images)."),
    submission: bool = typer.Option(True, help="Include the submission setting (about 10x the default's time)."),
    animeface_python: str = typer.Option("", help="A Python with animeface and Pillow < 12 to run animeface in."),
    precisions: str = typer.Option("auto", help="acfd's network precisions to compare, comma-separated (auto, float32, int8)."),
) -> None:
    import torch

    from acfd.data import formats

    if split and not Path(split).is_file():
        raise typer.BadParameter(f"{split}: file not found (the iCartoonFace data: --split, --images-dir, --annotations)")
    if (ap or not split) and not annotations.is_file():
        raise typer.BadParameter(f"{annotations}: file not found (give --annotations, or a --split and --no-ap)")
    if split:
        names = [n for n in formats.read_split(Path(split)) if n]
    else:
        names = sorted(formats.read_icartoon_csv(annotations)[0])
    if images:
        names = names[:images]
    paths = [images_dir / n for n in names]
    missing = [p for p in paths if not p.is_file()]
    if not paths or missing:
        raise typer.BadParameter(f"{missing[0] if missing else images_dir}: image not found")
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    typer.echo(f"machine: {machine_line()}")
    typer.echo(f"load average at start: {load_line()}")
    typer.echo(f"{len(paths)} images from {images_dir}, {threads} threads, {passes} passes")

    interactive_ap = {"evaluation": True, "scales": "640", "flip": False, "agreement_iou": None, "verifier_max_boxes": None}
    settings = []
    for precision in [p.strip() for p in precisions.split(",") if p.strip()]:
        given = {"precision": precision}
        det = make_detector(threads, **given)
        tag = f", {det.precision}"  # type: ignore[attr-defined]
        interactive = acfd_runner(make_detector(threads, **given, **interactive_ap)) if ap else None
        settings.append(Setting(f"acfd default (`Detector()`: calibration + verifier{tag})", acfd_runner(det), det, interactive))
        det = make_detector(threads, **given)
        settings.append(Setting(f"acfd default over the set (`Detector().detect_paths(paths)`{tag}, "
                                f"{det.parallel_images} images at a time)", acfd_runner(det), det, interactive,  # type: ignore[attr-defined]
                                run_all=acfd_set_runner(det)))
        det = make_detector(threads, verifier=None, **given)
        settings.append(Setting(f"acfd without the verifier (`Detector(verifier=None)`{tag})", acfd_runner(det), det,
                                acfd_runner(make_detector(threads, verifier=None, **given, **interactive_ap)) if ap else None))
        if submission:
            det = make_detector(threads, evaluation=True, **given)
            settings.append(Setting(f"acfd submission setting (`Detector.for_evaluation()`{tag})", acfd_runner(det), det))
    if lbpcascade.is_file():
        run, scored = lbpcascade_runners(lbpcascade)
        settings.append(Setting("lbpcascade_animeface (OpenCV, scaleFactor 1.1, minNeighbors 5, minSize 24)", run,
                                ap_run=scored))
    else:
        typer.echo(f"{lbpcascade}: not found; lbpcascade_animeface left out (give --lbpcascade PATH)")
    name = "animeface (nagadomi's animeface-2009)"
    if animeface_python:
        worker = AnimefaceWorker(animeface_python)
        settings.append(Setting(f"{name}, in {animeface_python}", worker, cpu_clock=worker.cpu_seconds))
    else:
        run, why = animeface_here()
        if run is not None:
            settings.append(Setting(name, run))
        else:
            typer.echo(why)

    try:
        measure(settings, paths, passes)
        if ap:
            gt = ground_truth(annotations, images_dir, names)
            for s in settings:
                s.ap50 = average_precision(s, paths, gt)
    finally:
        for s in settings:
            if isinstance(s.run, AnimefaceWorker):
                s.run.close()
    typer.echo("")
    if ap:
        typer.echo("AP50: the official iCartoonFace scorer (acfd eval) on these images; the two acfd default rows at "
                   "the model card's interactive setting (the same network and verifier, every box kept)")
    typer.echo(format_table(settings, passes))
    typer.echo("")
    for s in settings:
        if s.name.startswith("acfd submission"):
            typer.echo(f"submission setting: {s.median_pass()[1] / 1000:.2f} s of CPU per image")
    typer.echo(f"load average at end: {load_line()}")


if __name__ == "__main__":
    typer.run(main)
