"""Second-stage face verifier: a small CNN that re-scores and refines each final box from a crop
of the image around it (not in the ACFD paper).

The one-stage detector's score comes from one anchor's receptive field at one pyramid level; most of
what it loses on the iCartoonFace dev split is false positives on round face-like things (emblems,
digits, logos) and boxes whose extent is off (docs/experiments/detector.md, "Where the AP50 is lost"). A
cascade stage that looks again at a context crop of each candidate, as MTCNN's R-Net / O-Net do
(Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional
Networks", 2016), predicts both "is this a face" and the offsets of the face's box.

* crops: a square of ``context`` x the box's longer side, centred on the box, taken from the image
  resized to ``long_side`` pixels on its longer side, sampled to ``crop_size`` pixels
  (``torchvision.ops.roi_align``);
* network: timm's ``ResNet`` with basic blocks (one per stage) and five outputs: a face logit and
  the four box-corner offsets in units of the box's longer side (MTCNN's bounding-box regression);
* combination (:class:`VerifierStacking`): logistic regression of the detector's calibrated score
  (as a logit) and the verifier's logit, fitted on training images the verifier did not train on
  (stacking); boxes move by ``box_step`` x the predicted offsets.

The weights and the stacking travel in one ``.safetensors`` file (metadata key :data:`METADATA_KEY`),
fitted for one detector weights file: its fingerprint is stored with them, and the detector's
model file (:class:`acfd.predict.modelfile.ModelFile`) finds the verifier beside it and checks the tie.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file
from timm.models.resnet import BasicBlock, ResNet
from torchvision.ops import roi_align

from acfd.config import dataclass_from_dict
from acfd.detection.protocol import PAPER_SCORE_THRESH
from acfd.utils import atomic_path, cache_dir, package_version, state_sha256

#: Metadata key of the verifier's config and stacking in its ``.safetensors`` file.
METADATA_KEY = "acfd_verifier"
#: ONNX opset of the verifier's export (:meth:`BoxVerifier.use_onnx_runtime`).
ONNX_OPSET = 17
#: ImageNet mean / std in 0-255 pixels (the verifier's input normalisation).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class VerifierConfig:
    """Architecture and crop geometry of a verifier variant.

    Args:
        name: the variant's registry name.
        channels: output channels of the four ResNet stages (one basic block each).
        stem_width: width of timm's deep stem (three 3x3 convolutions).
        crop_size: side of the square crop fed to the network, in pixels.
        context: crop side / box's longer side.
        long_side: the image is resized to this longer side before cropping.
        members: networks in the ensemble, trained alike with different seeds; their outputs
            (logit and offsets) are averaged (``members`` x the verify time).
    """

    name: str
    channels: tuple[int, int, int, int] = (32, 64, 128, 256)
    stem_width: int = 16
    crop_size: int = 64
    context: float = 1.6
    long_side: int = 640
    members: int = 1

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ValueError(f"verifier {self.name!r}: members must be at least 1, got {self.members}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VerifierConfig:
        cfg = dataclass_from_dict(cls, data, "verifier config")
        return dataclasses.replace(cfg, channels=tuple(int(c) for c in cfg.channels))


#: Verifier variants: ``r4-32`` is one network of 1.2 M parameters on 64-pixel crops, ``-96`` the
#: same on 96-pixel crops (2.25x the FLOPs), ``x2`` an ensemble of two; ``r4-tiny`` /
#: ``r4-tiny-x2`` are for tests.
VERIFIERS: dict[str, VerifierConfig] = {
    "r4-32": VerifierConfig("r4-32"),
    "r4-32x2": VerifierConfig("r4-32x2", members=2),
    "r4-32-96": VerifierConfig("r4-32-96", crop_size=96),
    "r4-32-96x2": VerifierConfig("r4-32-96x2", crop_size=96, members=2),
    "r4-tiny": VerifierConfig("r4-tiny", channels=(8, 16, 32, 64), stem_width=8, crop_size=32),
    "r4-tiny-x2": VerifierConfig("r4-tiny-x2", channels=(8, 16, 32, 64), stem_width=8, crop_size=32, members=2),
}


def get_verifier_config(name: str) -> VerifierConfig:
    """The registered :class:`VerifierConfig` called ``name``."""
    if name not in VERIFIERS:
        raise ValueError(f"unknown verifier {name!r}; choose from {', '.join(sorted(VERIFIERS))}")
    return VERIFIERS[name]


class FaceVerifier(nn.Module):
    """``(B, 3, S, S)`` normalised crops -> ``(B, 5)``: face logit, then the offsets
    ``(dx1, dy1, dx2, dy2)`` of the face's box corners in units of the box's longer side; with
    ``cfg.members`` > 1 the mean of that many networks' outputs (an ensemble in one module, so
    one ONNX graph)."""

    def __init__(self, cfg: VerifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.nets = nn.ModuleList(
            ResNet(block=BasicBlock, layers=[1, 1, 1, 1], channels=cfg.channels, stem_width=cfg.stem_width,
                   stem_type="deep", num_classes=5)
            for _ in range(cfg.members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.nets[0](x)
        for net in self.nets[1:]:
            out = out + net(x)
        return out / len(self.nets) if len(self.nets) > 1 else out

    @classmethod
    def ensemble(cls, cfg: VerifierConfig, members: Sequence[FaceVerifier]) -> FaceVerifier:
        """One verifier of ``cfg`` (``cfg.members`` networks) from single-network verifiers."""
        if len(members) != cfg.members or any(m.cfg.members != 1 for m in members):
            raise ValueError(f"verifier {cfg.name!r} needs {cfg.members} single-network members, got "
                             f"{[m.cfg.members for m in members]}")
        model = cls(cfg)
        for net, member in zip(model.nets, members, strict=True):
            net.load_state_dict(member.nets[0].state_dict())
        return model


def legacy_state_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Single-network verifier files from before ensembles hold their network under ``net.``: it
    is the first of ``nets``."""
    return {f"nets.0.{k[4:]}" if k.startswith("net.") else k: v for k, v in state.items()}


def flip_outputs(out: torch.Tensor) -> torch.Tensor:
    """Outputs for a mirrored crop expressed for the original one: x offsets swap and change sign."""
    return torch.stack([out[:, 0], -out[:, 3], out[:, 2], -out[:, 1], out[:, 4]], 1)


def mirror_averaged(network: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The mean of ``network``'s outputs for crops ``x`` and for their mirror images (expressed for
    ``x``), in one batch: faster than two calls."""
    both = network(torch.cat([x, x.flip(-1)]))
    return (both[:len(x)] + flip_outputs(both[len(x):])) / 2


def flip_offsets(offsets: torch.Tensor) -> torch.Tensor:
    """``(K, 4)`` box-offset targets of a crop, for the crop mirrored left-right."""
    return torch.stack([-offsets[:, 2], offsets[:, 1], -offsets[:, 0], offsets[:, 3]], 1)


def box_long_sides(boxes: np.ndarray) -> np.ndarray:
    """``(K,)`` longer sides of ``(K, 4)`` boxes, at least 1 pixel."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.maximum(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]), 1.0)


def context_crops(image: np.ndarray, boxes: np.ndarray, cfg: VerifierConfig) -> torch.Tensor:
    """``(K, 3, S, S)`` uint8 crops of an RGB ``(H, W, 3)`` uint8 image around ``(K, 4)`` boxes
    (original pixels): squares of ``cfg.context`` x the longer side, centred on each box, from the
    image resized to ``cfg.long_side`` (OpenCV area interpolation), bilinear ``roi_align``; outside
    the image is black."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    size = cfg.crop_size
    if len(boxes) == 0:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    height, width = image.shape[:2]
    factor = cfg.long_side / max(height, width)
    resized = cv2.resize(image, (max(1, round(width * factor)), max(1, round(height * factor))),
                         interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    # contiguous CHW: torchvision's CPU roi_align is about twice as fast on it as on the HWC view
    tensor = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)[None].float().contiguous()
    b = boxes * factor
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    half = box_long_sides(b) * cfg.context / 2
    rois = torch.from_numpy(np.stack([cx - half, cy - half, cx + half, cy + half], 1)).float()
    out = roi_align(tensor, [rois], (size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def normalise_crops(crops: torch.Tensor) -> torch.Tensor:
    """uint8 (or float 0-255) ``(B, 3, S, S)`` crops -> normalised float32, channels-last."""
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    return ((crops.float() - mean) / std).contiguous(memory_format=torch.channels_last)


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.double().clamp(1e-6, 1 - 1e-6)
    return torch.log(p) - torch.log1p(-p)


@dataclass(frozen=True)
class VerifierStacking:
    """How the verifier's outputs change a final box (fitted by ``acfd train-verifier``).

    ``score = sigmoid(score_weight * logit(detector score) + verifier_weight * min(verifier logit,
    max_verifier_logit) + bias)`` (the detector score being its calibrated one when the weights
    have a calibration), and the box moves by ``box_step`` x the predicted offsets x its longer
    side. The cap on the verifier's logit (above any it gave on the training images) bounds how
    far it can raise a box, so boxes that cannot reach a score threshold need no crop
    (:meth:`min_detector_score`).

    Args:
        score_weight, verifier_weight, bias: the logistic regression's coefficients.
        box_step: fraction of the predicted box offsets applied (0: boxes unchanged).
        flip: average the outputs of each crop and its mirror image (as fitted).
        raw_score_floor: the raw detector score above which boxes were verified when fitting;
            the detector keeps every box above it for the verifier.
        calibrated: whether the stacking was fitted on calibrated detector scores.
        fitted_on: what it was fitted on (a note).
        max_verifier_logit: the cap on the verifier's logit.
    """

    score_weight: float
    verifier_weight: float
    bias: float
    box_step: float = 1.0
    flip: bool = True
    raw_score_floor: float = PAPER_SCORE_THRESH
    calibrated: bool = True
    fitted_on: str = ""
    max_verifier_logit: float = 12.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VerifierStacking:
        """The stacking stored in a verifier file (``raw_floor``: the older name of ``raw_score_floor``)."""
        values = dict(data)
        if "raw_floor" in values and "raw_score_floor" not in values:
            values["raw_score_floor"] = values.pop("raw_floor")
        return dataclass_from_dict(cls, values, "verifier stacking")

    def __call__(self, scores: torch.Tensor, verifier_logits: torch.Tensor) -> torch.Tensor:
        capped = verifier_logits.double().clamp(max=self.max_verifier_logit)
        z = self.score_weight * _logit(scores) + self.verifier_weight * capped + self.bias
        return torch.sigmoid(z).to(scores.dtype)

    def min_detector_score(self, score_thresh: float) -> float:
        """The detector score at or below which no verifier logit lifts a box above ``score_thresh``
        (0 when every box may pass: no threshold, or weights that do not rise with the scores)."""
        if score_thresh <= 0 or self.score_weight <= 0 or self.verifier_weight < 0:
            return 0.0
        best = self.verifier_weight * self.max_verifier_logit + self.bias
        z = (math.log(score_thresh) - math.log1p(-score_thresh) - best) / self.score_weight if score_thresh < 1 else math.inf
        return 1.0 / (1.0 + math.exp(-z)) if z < 700 else 1.0


class BoxVerifier:
    """A trained :class:`FaceVerifier` with its :class:`VerifierStacking`, applied to final boxes.

    Args:
        model: the network (put in eval mode).
        stacking: how its outputs combine with the detector's.
        detector: fingerprint of the detector weights it was fitted for (``""``: unknown).
        source: where it was loaded from (for messages).
    """

    def __init__(self, model: FaceVerifier, stacking: VerifierStacking, detector: str = "", source: str = "") -> None:
        self.model = model.eval()
        self.cfg = model.cfg
        self.stacking = stacking
        self.detector = detector
        self.source = source
        self.session: Any = None  # an onnxruntime.InferenceSession once use_onnx_runtime() is called

    def __repr__(self) -> str:
        backend = "onnx" if self.session is not None else "torch"
        return f"BoxVerifier({self.cfg.name!r}, source={self.source!r}, backend={backend!r})"

    def to(self, device: str | torch.device) -> BoxVerifier:
        """Run the network on ``device`` (crops are cut on the CPU)."""
        self.model.to(device)
        return self

    def use_onnx_runtime(self, num_threads: int | None = None, cache: bool = True) -> BoxVerifier:
        """Run the network with ONNX Runtime on the CPU (2-4x faster than eager PyTorch on the few
        crops of an image). The export (about a second) is kept in :func:`acfd.utils.cache_dir`
        under a name holding the SHA-256 of the weights and the acfd version (``cache=False``: in memory only).

        Raises:
            ImportError: onnxruntime is not installed.
            RuntimeError: the export failed.
        """
        import onnxruntime as ort  # optional at run time: PyTorch runs the verifier without it

        path = self._onnx_cache_path() if cache else None
        proto = path.read_bytes() if path is not None and path.is_file() else self._export_onnx()
        if path is not None and not path.is_file():
            try:
                with atomic_path(path) as tmp:  # two processes racing both end with a whole file
                    Path(tmp).write_bytes(proto)
            except OSError as exc:  # a read-only cache: in memory this time
                logging.getLogger(__name__).debug("verifier export not cached at %s (%s)", path, exc)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # no spinning after each run: the detector's runner and PyTorch need the cores next
        # (as acfd.deploy.onnx_runner.OnnxRunner)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(proto, options, providers=["CPUExecutionProvider"])
        return self

    def _onnx_cache_path(self) -> Path:
        digest = state_sha256(self.model)[:24]
        return cache_dir() / f"verifier-{self.cfg.name}-{digest}-opset{ONNX_OPSET}-v{package_version()}.onnx"

    def _export_onnx(self) -> bytes:
        """The network as an ONNX model with a dynamic batch (TorchScript exporter, as for the
        detector in :mod:`acfd.deploy.export`)."""
        sample = torch.zeros((2, 3, self.cfg.crop_size, self.cfg.crop_size))
        buffer = io.BytesIO()
        model = FaceVerifier(self.cfg).eval()  # a CPU float32 copy, whatever device self.model is on
        model.load_state_dict({k: v.float().cpu() for k, v in self.model.state_dict().items()})
        with warnings.catch_warnings(), torch.no_grad():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            torch.onnx.export(model, (sample,), buffer, input_names=["crops"], output_names=["outputs"],
                              dynamic_axes={"crops": {0: "batch"}, "outputs": {0: "batch"}}, opset_version=ONNX_OPSET,
                              dynamo=False)
        return buffer.getvalue()

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        if self.session is not None:
            return torch.from_numpy(self.session.run(None, {"crops": x.contiguous().numpy()})[0])
        device = next(self.model.parameters()).device
        return self.model(x.to(device)).float().cpu()

    @torch.inference_mode()
    def outputs(self, image: np.ndarray, boxes: np.ndarray, batch_size: int = 256) -> torch.Tensor:
        """``(K, 5)`` outputs for boxes of one RGB image (mirror-averaged when the stacking says)."""
        crops = context_crops(image, boxes, self.cfg)
        parts = []
        for start in range(0, len(crops), batch_size):
            x = normalise_crops(crops[start:start + batch_size])
            if self.stacking.flip:
                parts.append(mirror_averaged(self._network, x))
            else:
                parts.append(self._network(x))
        return torch.cat(parts) if parts else torch.zeros((0, 5))

    def __call__(self, image: np.ndarray, boxes: torch.Tensor, scores: torch.Tensor,
                 score_thresh: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Re-scored and refined ``(boxes, scores)`` of one image's final boxes (original pixels).

        With ``score_thresh``, boxes that cannot end above it
        (:meth:`VerifierStacking.min_detector_score`) are dropped before cropping; the caller
        applies the threshold to the rest."""
        if score_thresh > 0:
            keep = scores > self.stacking.min_detector_score(score_thresh)
            boxes, scores = boxes[keep], scores[keep]
        if len(boxes) == 0:
            return boxes, scores
        out = self.outputs(image, boxes.detach().cpu().numpy()).to(boxes.device)
        new_scores = self.stacking(scores, out[:, 0])
        long_side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).clamp(min=1.0)
        new_boxes = boxes + self.stacking.box_step * out[:, 1:].to(boxes.dtype) * long_side[:, None]
        height, width = image.shape[:2]
        new_boxes[:, 0::2] = new_boxes[:, 0::2].clamp(0, width)
        new_boxes[:, 1::2] = new_boxes[:, 1::2].clamp(0, height)
        return new_boxes, new_scores


def save_verifier(model: FaceVerifier, stacking: VerifierStacking, path: str | os.PathLike[str],
                  detector: str = "") -> Path:
    """Write the verifier (float32 weights, config, stacking, detector fingerprint) atomically."""
    meta = {"config": model.cfg.to_dict(), "stacking": dataclasses.asdict(stacking), "detector": detector}
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})
    return Path(path)


def load_verifier(path: str | os.PathLike[str]) -> BoxVerifier:
    """Read a verifier written by :func:`save_verifier`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a verifier file (one line naming the file and the problem).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: verifier file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get(METADATA_KEY)
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - any safetensors failure is one "not readable" line
        raise ValueError(f"{path}: not a readable .safetensors verifier ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if text is None:
        raise ValueError(f"{path}: not a verifier file (no {METADATA_KEY!r} metadata; acfd train-verifier writes one)")
    try:
        meta = json.loads(text)
        cfg = VerifierConfig.from_dict(meta["config"])
        stacking = VerifierStacking.from_dict(meta["stacking"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: broken verifier metadata ({exc})") from None
    model = FaceVerifier(cfg)
    try:
        model.load_state_dict(legacy_state_keys(state))
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit verifier {cfg.name!r} ({str(exc).splitlines()[0]})") from None
    return BoxVerifier(model, stacking, detector=str(meta.get("detector", "")), source=str(path))


__all__ = [
    "METADATA_KEY",
    "VERIFIERS",
    "BoxVerifier",
    "FaceVerifier",
    "VerifierConfig",
    "VerifierStacking",
    "context_crops",
    "flip_offsets",
    "flip_outputs",
    "get_verifier_config",
    "legacy_state_keys",
    "load_verifier",
    "mirror_averaged",
    "normalise_crops",
    "save_verifier",
]
