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
import hashlib
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from timm.models.resnet import BasicBlock, ResNet
from torch import nn
from torchvision.ops import roi_align

from acfd.detection.verifier_runtime import (
    METADATA_KEY,
    PIXEL_MEAN,
    PIXEL_STD,
    VerifierConfig,
    VerifierSession,
    VerifierStacking,
    crop_squares,
    rescore_boxes,
    resized_for_crops,
)
from acfd.utils import atomic_path, cache_dir, package_version, state_sha256

#: ONNX opset of the verifier's export (:meth:`BoxVerifier.use_onnx_runtime`).
ONNX_OPSET = 17


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
    n = x.shape[0]  # not len(x): the ONNX export must keep the number of crops dynamic
    both = network(torch.cat([x, x.flip(-1)]))
    return (both[:n] + flip_outputs(both[n:])) / 2


def flip_offsets(offsets: torch.Tensor) -> torch.Tensor:
    """``(K, 4)`` box-offset targets of a crop, for the crop mirrored left-right."""
    return torch.stack([-offsets[:, 2], offsets[:, 1], -offsets[:, 0], offsets[:, 3]], 1)


def _crops_of(image: torch.Tensor, rois: torch.Tensor, size: int) -> torch.Tensor:
    """``(K, 3, size, size)`` float crops (whole 0-255 values) of a ``(1, 3, H, W)`` float image at
    ``(K, 4)`` squares: bilinear ``roi_align`` (exported as ONNX ``RoiAlign``), outside is black."""
    out = roi_align(image, [rois], (size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    return out.round().clamp(0, 255)


def context_crops(image: np.ndarray, boxes: np.ndarray, cfg: VerifierConfig) -> torch.Tensor:
    """``(K, 3, S, S)`` uint8 crops of an RGB ``(H, W, 3)`` uint8 image around ``(K, 4)`` boxes
    (original pixels): squares of ``cfg.context`` x the longer side, centred on each box, from the
    image resized to ``cfg.long_side`` (:func:`~acfd.detection.verifier_runtime.resized_for_crops`),
    bilinear ``roi_align``; outside the image is black."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return torch.zeros((0, 3, cfg.crop_size, cfg.crop_size), dtype=torch.uint8)
    resized, factor = resized_for_crops(image, cfg)
    # contiguous CHW: torchvision's CPU roi_align is about twice as fast on it as on the HWC view
    tensor = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)[None].float().contiguous()
    rois = torch.from_numpy(crop_squares(boxes, factor, cfg))
    return _crops_of(tensor, rois, cfg.crop_size).to(torch.uint8)


def normalise_crops(crops: torch.Tensor) -> torch.Tensor:
    """uint8 (or float 0-255) ``(B, 3, S, S)`` crops -> normalised float32, channels-last."""
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    return ((crops.float() - mean) / std).contiguous(memory_format=torch.channels_last)


class VerifierStage(nn.Module):
    """The verifier's whole inference stage as one module, for the ONNX stage graph
    (:mod:`acfd.detection.verifier_runtime`): ``(1, 3, H, W)`` float image (0-255, resized to
    ``long_side``) and ``(K, 4)`` crop squares in its pixels -> ``(K, 5)`` outputs, mirror-averaged
    when the stacking says so."""

    def __init__(self, model: FaceVerifier, flip: bool) -> None:
        super().__init__()
        self.model = model
        self.flip = flip
        self.register_buffer("mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        x = (_crops_of(image, rois, self.model.cfg.crop_size) - self.mean) / self.std
        return mirror_averaged(self.model, x) if self.flip else self.model(x)


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
        self.session: VerifierSession | None = None  # set by use_onnx_runtime()

    def __repr__(self) -> str:
        backend = "onnx" if self.session is not None else "torch"
        return f"BoxVerifier({self.cfg.name!r}, source={self.source!r}, backend={backend!r})"

    def to(self, device: str | torch.device) -> BoxVerifier:
        """Run the network on ``device`` (crops are cut on the CPU)."""
        self.model.to(device)
        return self

    def use_onnx_runtime(self, num_threads: int | None = None, cache: bool = True) -> BoxVerifier:
        """Run the whole stage (crops and network) with ONNX Runtime on the CPU, as the stage graph
        of :mod:`acfd.detection.verifier_runtime` (2-4x faster than eager PyTorch on the few crops
        of an image). The export (about a second) is kept in :func:`acfd.utils.cache_dir` under a
        name holding the SHA-256 of the weights and the acfd version (``cache=False``: in memory only).

        Raises:
            ImportError: onnxruntime is not installed.
            RuntimeError: the export failed.
        """
        beside = Path(self.source).with_suffix(".onnx") if self.source.endswith(".safetensors") else None
        if beside is not None and beside.is_file() and self._is_stage_of_self(beside):
            self.session = VerifierSession(beside, num_threads, source=str(beside))  # shipped with the file
            return self
        path = self._onnx_cache_path() if cache else None
        proto = path.read_bytes() if path is not None and path.is_file() else self.stage_graph()
        if path is not None and not path.is_file():
            try:
                with atomic_path(path) as tmp:  # two processes racing both end with a whole file
                    Path(tmp).write_bytes(proto)
            except OSError as exc:  # a read-only cache: in memory this time
                logging.getLogger(__name__).debug("verifier export not cached at %s (%s)", path, exc)
        self.session = VerifierSession(proto, num_threads, source=self.source or self.cfg.name)
        return self

    def _stage_metadata(self) -> str:
        return json.dumps({"config": self.cfg.to_dict(), "stacking": dataclasses.asdict(self.stacking),
                           "detector": self.detector, "weights": self._weights_digest})

    @cached_property
    def _weights_digest(self) -> str:
        return state_sha256(self.model)[:24]

    def _is_stage_of_self(self, path: Path) -> bool:
        """Whether ``path`` is this verifier's stage graph (the same weights, stacking and detector)."""
        import onnx

        try:
            props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        except Exception:  # noqa: BLE001 - unreadable: export again
            return False
        return props.get(METADATA_KEY) == self._stage_metadata()

    def _onnx_cache_path(self) -> Path:
        # the graph holds the weights and, in its metadata, the stacking and the detector's fingerprint
        digest = hashlib.sha256(self._stage_metadata().encode()).hexdigest()[:24]
        return cache_dir() / f"verifier-stage-{self.cfg.name}-{digest}-opset{ONNX_OPSET}-v{package_version()}.onnx"

    def stage_graph(self) -> bytes:
        """The stage graph (:class:`VerifierStage`: dynamic image size and number of boxes) as ONNX
        bytes, with the config, stacking and detector fingerprint in its metadata (TorchScript
        exporter, as for the detector in :mod:`acfd.deploy.export`)."""
        import onnx  # the export side only: running the graph needs ONNX Runtime alone

        model = FaceVerifier(self.cfg).eval()  # a CPU float32 copy, whatever device self.model is on
        model.load_state_dict({k: v.float().cpu() for k, v in self.model.state_dict().items()})
        stage = VerifierStage(model, self.stacking.flip).eval()
        image = torch.zeros((1, 3, self.cfg.long_side, self.cfg.long_side))
        rois = torch.tensor([[0.0, 0.0, 64.0, 64.0], [10.0, 10.0, 90.0, 90.0]])
        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # roi_align's input checks
            torch.onnx.export(stage, (image, rois), buffer, input_names=["image", "rois"], output_names=["outputs"],
                              dynamic_axes={"image": {2: "height", 3: "width"}, "rois": {0: "boxes"}, "outputs": {0: "boxes"}},
                              opset_version=ONNX_OPSET, dynamo=False)
        proto = onnx.load_from_string(buffer.getvalue())
        onnx.helper.set_model_props(proto, {METADATA_KEY: self._stage_metadata()})
        return proto.SerializeToString()

    def export_stage(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`stage_graph` to ``path`` atomically (shipped beside the detector's graph,
        it lets ``acfd detect`` run without torch)."""
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(self.stage_graph())
        return Path(path)

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.model(x.to(device)).float().cpu()

    @torch.inference_mode()
    def outputs(self, image: np.ndarray, boxes: np.ndarray, batch_size: int = 256) -> torch.Tensor:
        """``(K, 5)`` outputs for boxes of one RGB image (mirror-averaged when the stacking says)."""
        if self.session is not None:
            return torch.from_numpy(self.session.outputs(image, boxes))
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
                 score_thresh: float = 0.0, max_boxes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Re-scored and refined ``(boxes, scores)`` of one image's final boxes (original pixels).

        With ``score_thresh``, boxes that cannot end above it
        (:meth:`VerifierStacking.min_detector_score`) are dropped before cropping; the caller
        applies the threshold to the rest; at most ``max_boxes`` are cropped
        (:func:`~acfd.detection.verifier_runtime.rescore_boxes`)."""
        new_boxes, new_scores = rescore_boxes(self.stacking, lambda b: self.outputs(image, b).numpy(),
                                              boxes.detach().float().cpu().numpy(), scores.detach().float().cpu().numpy(),
                                              image.shape[:2], score_thresh, max_boxes)
        return (torch.from_numpy(new_boxes).to(boxes.device, boxes.dtype),
                torch.from_numpy(new_scores).to(scores.device, scores.dtype))


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
    "VerifierStage",
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
