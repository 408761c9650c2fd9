"""``acfd export`` (ONNX / TensorRT) and ``acfd bench`` (speed of the whole pipeline, paper 4.3)."""

from __future__ import annotations

import logging
import os
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from acfd.cli.errors import check_device, check_not_inputs, check_output_file, fail, one_line_errors
from acfd.config import ModelConfig

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

logger = logging.getLogger(__name__)


class ExportFormat(str, Enum):
    """Formats of ``acfd export --format``."""

    onnx = "onnx"
    tensorrt = "tensorrt"


def _default_output(model_or_weights: str | None, model_name: str, fmt: ExportFormat) -> Path:
    from acfd.deploy.export import tensorrt_available  # run time: start-up stays light

    if fmt is ExportFormat.onnx:
        suffix = ".onnx"
    else:
        suffix = ".ep" if tensorrt_available() else ".pt2"
    if model_or_weights is not None and Path(model_or_weights).is_file():
        return Path(model_or_weights).with_suffix(suffix)
    return Path(f"{model_name}{suffix}")


def export_command(
    model_or_weights: str | None = typer.Argument(
        None,
        metavar="MODEL_OR_WEIGHTS",
        help="A model name (acfd-s...), a .safetensors / checkpoint file, or nothing for the "
        "shipped default model.",
    ),
    fmt: ExportFormat = typer.Option(ExportFormat.onnx, "--format", "-f", help="Export format."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Output file (default: <model>.onnx, or next to the weights file)."
    ),
    opset: int | None = typer.Option(None, "--opset", min=11, help="ONNX opset (default 17)."),
    half: bool = typer.Option(False, "--half", help="Float16 weights and input (GPU deployment)."),
    weights: Path | None = typer.Option(None, "--weights", help="Weights for a model given by name."),
    size: str = typer.Option(
        "640x640", "--size", help="Input HxW used for tracing; the fixed input size of a TensorRT engine."
    ),
    fuse: bool = typer.Option(True, "--fuse/--no-fuse", help="Fuse ACBs and conv+BN first (paper 4.3)."),
    dynamic: bool = typer.Option(
        True, "--dynamic/--static", help="ONNX: dynamic batch, height and width (or fixed to --size)."
    ),
    max_batch: int = typer.Option(16, "--max-batch", min=1, help="TensorRT: largest batch."),
    check: bool = typer.Option(
        True, "--check/--no-check", help="ONNX: compare ONNX Runtime with PyTorch on a random input."
    ),
    verifier: bool = typer.Option(
        True, "--verifier/--no-verifier",
        help="ONNX: copy the weights' second-stage verifier beside the .onnx (OUT-verifier.safetensors).",
    ),
    int8: Path | None = typer.Option(
        None, "--int8", metavar="IMAGES",
        help="ONNX: also write the int8 graph OUT-int8.onnx (static quantization, ranges measured on IMAGES: a "
        "folder of training images, or a text file listing them, one path per line; never evaluation images).",
    ),
    int8_images: int = typer.Option(128, "--int8-images", min=1, help="Calibrate on at most this many of IMAGES (a seeded draw)."),
) -> None:
    """Export a model for deployment: ONNX (CPU / onnxruntime) or a TensorRT engine (CUDA).

    The exported network takes normalised images (B, 3, H, W) and returns cls_logits (B, A) and
    box_deltas (B, A, 4); the model config travels in the file's metadata. With ONNX, the score
    calibration and the inference presets go in the metadata too and the verifier fitted for the
    weights is copied beside the file, so that ``acfd detect --model OUT.onnx`` gives the boxes the
    weights give.
    """
    from acfd.deploy.export import DEFAULT_OPSET, export_tensorrt  # run time: start-up stays light
    from acfd.deploy.onnx_runner import check_onnx
    from acfd.deploy.precision import int8_graph_path
    from acfd.engine.bench import parse_size
    from acfd.predict.modelfile import ModelFile, verifier_path

    sample_size = parse_size(size)
    if fmt is ExportFormat.onnx and not dynamic:
        _check_static_size(sample_size)
    if output is not None:  # before loading anything
        check_output_file(output, "-o")
    if model_or_weights is None and weights is not None:
        model_or_weights, weights = str(weights), None
    source = ModelFile.open(model_or_weights, weights)
    if source.format == "onnx":
        fail(f"{source.path}: already an ONNX export; export the .safetensors / .pt file it came from")
    model = source.load_network()
    name = model.cfg.name
    out = output if output is not None else _default_output(model_or_weights, name, fmt)
    check_output_file(out, "-o")
    check_not_inputs(out, [p for p in (model_or_weights, weights) if p is not None and Path(p).is_file()], "-o")
    calibration_images = _int8_calibration_images(int8, int8_images) if int8 is not None else None
    if int8 is not None:
        if fmt is not ExportFormat.onnx or half:
            fail("--int8 makes an int8 ONNX graph for the CPU: not with --format tensorrt or --half", 2)
        check_output_file(int8_graph_path(out), "-o")
    copies_verifier = fmt is ExportFormat.onnx and verifier and source.fitted_verifier_path() is not None
    if copies_verifier and verifier_path(out) != source.fitted_verifier_path():
        check_output_file(verifier_path(out), "-o")
    with one_line_errors(also=(RuntimeError,)):  # e.g. "TensorRT export needs a CUDA GPU"
        if fmt is ExportFormat.onnx:
            opset = DEFAULT_OPSET if opset is None else opset
            _, beside = source.export_onnx(out, model, verifier=verifier, opset=opset, dynamic=dynamic, fuse=fuse,
                                           sample_size=sample_size, half=half)
        else:
            if opset is not None:
                logger.warning("--opset is ignored for --format tensorrt")
            export_tensorrt(
                model, out, half=half, fuse=fuse, sample_size=sample_size, max_batch=max_batch
            )
    size_mb = out.stat().st_size / 1e6
    if fmt is ExportFormat.onnx:
        shape = "dynamic batch/height/width" if dynamic else f"fixed 1x3x{size}"
        typer.echo(
            f"wrote {out} ({size_mb:.1f} MB, {name}, opset {opset}, "
            f"{'fused' if fuse else 'unfused'}, {'float16' if half else 'float32'}, {shape})"
        )
        if check:
            diff = check_onnx(model, out, (1, 3, *sample_size))
            typer.echo(
                f"check: max |onnxruntime - pytorch| cls_logits {diff['cls_logits']:.2e}, "
                f"box_deltas {diff['box_deltas']:.2e} (outputs up to {diff['scale']:.3g})"
            )
        if beside is not None:
            typer.echo(f"verifier: {beside} (used by acfd detect --model {out})")
        if calibration_images is not None:
            int8_out = _write_int8(out, calibration_images, int8)
            typer.echo(f"int8: {int8_out} ({int8_out.stat().st_size / 1e6:.1f} MB, calibrated on "
                       f"{len(calibration_images)} images of {int8}; used by --precision int8 / auto)")
    else:
        typer.echo(f"wrote {out} ({size_mb:.1f} MB, {name}, input Bx3x{size}, batch <= {max_batch})")


def _int8_calibration_images(source: Path, count: int) -> list[Path]:
    """Up to ``count`` images of a folder (recursive) or of a list file, drawn with seed 0, in order."""
    import numpy as np

    from acfd.data.image_io import is_image_file

    if source.is_dir():
        found = sorted(p for p in source.rglob("*") if is_image_file(p))
    elif source.is_file():
        lines = [line.strip() for line in source.read_text(errors="replace").splitlines()]
        found = [Path(line) if Path(line).is_absolute() else source.parent / line for line in lines if line]
        missing = [str(p) for p in found if not p.is_file()]
        if missing:
            fail(f"--int8 {source}: {len(missing)} listed images not found (first: {missing[0]})")
    else:
        fail(f"--int8 {source}: no such folder or list file")
    if not found:
        fail(f"--int8 {source}: no images")
    picks = np.random.default_rng(0).choice(len(found), size=min(count, len(found)), replace=False)
    return [found[i] for i in sorted(picks)]


def _write_int8(graph: Path, images: list[Path], source: Path) -> Path:
    """Quantize the float32 ``graph`` with ranges measured on ``images`` as the detector feeds them
    (its first interactive scale) and write ``NAME-int8.onnx`` beside it."""
    from acfd.data.image_io import load_image
    from acfd.deploy.precision import int8_graph_path
    from acfd.deploy.quantize import detector_calibration_batches, quantize_onnx
    from acfd.predict.detector import Detector

    detector = Detector(graph, verifier=None, calibration=None, precision="float32")
    with one_line_errors(also=(RuntimeError,)):
        decoded = [load_image(p) for p in images]
        return quantize_onnx(graph, int8_graph_path(graph), detector_calibration_batches(detector, decoded),
                             calibrated_on=f"{len(images)} images of {source.name}")


def _check_static_size(size: tuple[int, int]) -> None:
    """A static ONNX input must be a padded size: Detector pads every input to multiples of the
    size divisor (128), so a 320x320 graph could never be fed."""
    d = int(ModelConfig().size_divisor)
    if size[0] % d or size[1] % d:
        up = f"{-(-size[0] // d) * d}x{-(-size[1] // d) * d}"
        fail(f"--static --size {size[0]}x{size[1]}: a fixed input must be a multiple of {d} "
             f"(the detector pads inputs to {d}); use --size {up} or --dynamic")


def bench_command(
    model: str | None = typer.Option(
        None, "--model", help="Model name, or a weights file (default: the shipped model)."
    ),
    weights: Path | None = typer.Option(None, "--weights", help="Weights for --model (or alone)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    backends: str | None = typer.Option(
        None,
        "--backends",
        help="Comma list of eager,fused,onnx,compile,tensorrt (default: all the device supports).",
    ),
    scales: list[str] = typer.Option(
        ["640", "paper"],
        "--scales",
        help="A test-scale set; repeat for several: 640 (longer side), paper (480x645,640x860,"
        "800x1075), or a comma list of HxW.",
    ),
    batch_sizes: str = typer.Option("1,8", "--batch-sizes", help="Comma list of batch sizes."),
    warmup: int = typer.Option(2, "--warmup", min=0, help="Untimed runs per configuration."),
    iters: int = typer.Option(10, "--iters", min=1, help="Timed runs per configuration (median)."),
    images: Path | None = typer.Option(
        None, "--images", help="Also time the images of this folder (e.g. dev images)."
    ),
    max_images: int = typer.Option(16, "--max-images", min=1, help="Use at most this many --images."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the results as JSON."),
    threads: int | None = typer.Option(
        None, "--threads", min=1, max=max(1, 4 * (os.cpu_count() or 1)),
        help="CPU threads (default: torch's); at most 4x the CPU count.",
    ),
    score_thresh: float = typer.Option(
        0.08, "--score-thresh", "--score-thr", min=0.0, max=1.0, help="Detector score threshold."
    ),
    frame_size: str = typer.Option(
        "1080x1920", "--frame-size", hidden=True, help="Synthetic frame HxW (tests use a small one)."
    ),
    compile_mode: str = typer.Option("max-autotune", "--compile-mode", hidden=True),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar over the configurations on stderr."),
) -> None:
    """Milliseconds per 1920x1080 frame and per folder image: pre-processing, network, post-processing.

    Compares PyTorch eager, fused (paper 4.3), ONNX Runtime and, on CUDA, torch.compile and
    TensorRT, for single- and multi-scale tests at batch 1 and batched.
    """
    # run time: start-up stays light
    from acfd.engine.bench import parse_backends, parse_batch_sizes, parse_size, run_benchmark
    from acfd.predict.modelfile import ModelFile
    from acfd.predict.scales import parse_scales

    check_device(device)
    if json_out is not None:
        check_output_file(json_out, "--json")
    names = parse_backends(backends, device)
    batches = parse_batch_sizes(batch_sizes)
    frame = parse_size(frame_size)
    for spec in scales:
        parse_scales(spec)
    if model is None and weights is not None:
        model, weights = str(weights), None
    source = ModelFile.open(model, weights)
    net = source.load_network()
    imgs = _load_images(images, max_images) if images is not None else None
    report = run_benchmark(
        net,
        device=device,
        backends=names,
        scale_sets=scales,
        batch_sizes=batches,
        warmup=warmup,
        iters=iters,
        frame_size=frame,
        images=imgs,
        images_label=images.name if images is not None else "images",
        score_thresh=score_thresh,
        compile_mode=compile_mode,
        num_threads=threads,
        nms_thresh=source.preset("interactive").nms_thresh,
        progress=progress,
    )
    meta = report.meta
    typer.echo(
        f"{meta['model']} on {meta['device']} ({meta.get('gpu') or meta['cpu']}, "
        f"{meta['torch_threads']} threads), torch {meta['torch']}; {meta['units']} "
        f"({warmup} warmup, {iters} iters)"
    )
    typer.echo(report.format_table())
    if json_out is not None:
        report.write_json(json_out)
        typer.echo(f"wrote {json_out}")


def _load_images(folder: Path, limit: int) -> list[np.ndarray]:
    """Up to ``limit`` images of ``folder`` (sorted by name) as RGB uint8 arrays."""
    from acfd.data.image_io import ImageReadError, is_image_file, load_image  # run time: start-up stays light

    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))[:limit]
    out = []
    for path in files:
        try:
            out.append(load_image(path))
        except ImageReadError as exc:
            logger.warning("skipping %s", exc)
    if not out:
        raise ValueError(f"{folder}: no readable images")
    return out


def register(app: typer.Typer) -> None:
    """Add the ``export`` and ``bench`` commands to ``app``."""
    app.command("export")(one_line_errors(export_command))
    app.command("bench")(one_line_errors(bench_command))
