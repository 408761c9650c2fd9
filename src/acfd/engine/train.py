"""Training (paper 4.1 "Optimization"): SGD, warm-up, step decay, AMP, DDP, resumable checkpoints.

The paper's recipe (SGD, 640 crops, its augmentation) is the default and stays available unchanged
as ``configs/acfd-l-paper.yaml``. The CPU recipe (``configs/acfd-n-cpu.yaml``) switches, by settings
only: AdamW, cosine decay, an EMA of the weights, bf16 autocast + channels_last on the CPU, images
decoded once into a memory cache and :class:`~acfd.data.transforms.FastTrainTransform`.

Run on one device with ``acfd train --config configs/acfd-s.yaml``, or on several GPUs / nodes with
``torchrun --nproc_per_node N -m acfd.engine.train --config ...`` (DistributedDataParallel, rank-0
logging and checkpoints).

Reproducibility: the order of samples is a permutation seeded by ``(seed, epoch)``
(:class:`acfd.training.ResumableSampler`) and every sample's augmentation is seeded by ``(seed,
epoch, index)``, so a run killed at any iteration and resumed with ``--resume`` sees exactly the
batches it would have seen. Checkpoints, resume, ``metrics.jsonl`` and SIGTERM handling are the
shared :class:`acfd.training.CheckpointedTrainer`'s.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from acfd.config import config_to_dict
from acfd.data.dataset import DetectionDataset, detection_collate
from acfd.data.formats import read_icartoon_csv, read_split
from acfd.data.transforms import EvalTransform, FastTrainTransform, TrainTransform
from acfd.detection.protocol import PAPER_NMS_THRESH
from acfd.engine.evaluate import evaluate_model
from acfd.models.detector import ACFD
from acfd.models.registry import create_model
from acfd.predict.modelfile import load_weights_into, save_weights
from acfd.training import (  # the scaffolding every trainer shares; importable from here too
    CheckpointedTrainer,
    ResumableSampler,
    build_optimizer,
    lr_factor,
    read_settings,
    rng_state,
    save_checkpoint,
    set_rng_state,
    stop_on_signals,
    weight_decay_groups,
)
from acfd.utils import atomic_write_text

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """One training recipe; the defaults are the paper's (section 4.1), YAML files override them."""

    # model
    model: str = "acfd-s"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    # Start from these weights (safetensors or checkpoint of the same architecture) instead of
    # random ones: a warm restart, a full schedule from earlier weights (the CPU recipe's shipped
    # model was trained so, docs/experiments/). Unlike --resume, the schedule starts anew.
    init_weights: str | None = None
    # data
    images: str = "../shared/data/icartoonface-det/images"
    annotations: str = "../shared/data/icartoonface-det/annotations/train.csv"
    train_split: str | None = "../shared/data/icartoonface-det/splits/train.txt"
    val_split: str | None = "../shared/data/icartoonface-det/splits/dev.txt"
    input_size: int = 640
    # "paper" (TrainTransform, section 4.1), "fast" (FastTrainTransform: the CPU recipe) or "none"
    # (resize only: debugging, overfitting checks); true / false mean "paper" / "none".
    augment: bool | str = True
    expand_max_ratio: float = 4.0  # paper: expansion in [1, 4]
    crop_min_scale: float = 0.3  # smallest square crop, fraction of the short side
    zoom_range: list[float] = field(default_factory=lambda: [0.5, 1.5])  # "fast": see FastTrainTransform
    # Keep the images decoded in memory, longer side <= this many pixels (None: decode every time).
    # With "fast" augmentation this is also the pixel scale the zoom is relative to: set it to the
    # evaluation scale.
    cache_max_side: int | None = None
    workers: int = 4
    # optimisation: SGD momentum 0.9, weight decay 5e-4, lr 0.04 for a batch of 64
    optimizer: str = "sgd"  # "sgd" (paper) or "adamw" (the CPU recipe: learns in a CPU budget)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw
    epochs: int = 300
    batch_size: int = 16  # per process
    base_lr: float = 0.04
    base_batch_size: int = 64  # lr = base_lr * global batch / base_batch_size
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_iters: int = 1000
    warmup_start_lr: float = 1e-6
    milestones: list[int] = field(default_factory=lambda: [200, 250, 280])
    lr_gamma: float = 0.1
    lr_schedule: str = "step"  # "step" (paper: milestones) or "cosine" (to min_lr_ratio at the end)
    min_lr_ratio: float = 0.01
    grad_clip_norm: float | None = 35.0
    ema_decay: float | None = None  # an EMA of the weights (timm ModelEmaV3), evaluated and saved
    # hardware
    device: str = "auto"  # auto: cuda when available
    threads: int | None = None  # torch intra-op threads (None: torch's default, one per core)
    # autocast: "auto" = bf16 on CUDA, none on the CPU; "bf16" also on the CPU (fast on CPUs with
    # AVX512-BF16 / AMX); "fp16" (CUDA, with a GradScaler); "none"
    amp: str = "auto"
    channels_last: bool | str = "auto"  # auto: on CUDA only; true: on the CPU too
    # bookkeeping
    output: str = "runs/acfd-s"
    seed: int = 0
    log_every: int = 20
    save_every: int = 10  # epochs
    eval_every: int = 10  # epochs (0: never)
    eval_scales: list[str] = field(default_factory=lambda: ["640x860"])
    max_iters: int | None = None  # stop after this many iterations in total (tests, smoke runs)
    time_limit: float | None = None  # seconds; checkpoint and stop when exceeded
    progress: bool = True


def load_train_config(path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML file and ``key=value`` overrides (see :func:`read_settings`)."""
    cfg = read_settings(TrainConfig, path, overrides)
    _check_choice("optimizer", cfg.optimizer, ("sgd", "adamw"))
    _check_choice("lr_schedule", cfg.lr_schedule, ("step", "cosine"))
    _check_choice("amp", cfg.amp, ("auto", "bf16", "fp16", "none"))
    _check_choice("augment", augment_mode(cfg), ("paper", "fast", "none"))
    if cfg.batch_size < 2:
        # BatchNorm cannot normalise the 1x1 maps of the stride-128 level from a single image
        raise ValueError(f"batch_size must be at least 2 per process, got {cfg.batch_size}")
    return cfg


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def augment_mode(cfg: TrainConfig) -> str:
    """``cfg.augment`` as one of "paper", "fast", "none"."""
    if cfg.augment is True:
        return "paper"
    if cfg.augment is False:
        return "none"
    return str(cfg.augment)


def build_transform(cfg: TrainConfig, mean: Sequence[float]) -> Any:
    """The training transform that ``cfg.augment`` names."""
    mode = augment_mode(cfg)
    if mode == "paper":
        return TrainTransform(size=cfg.input_size, mean=mean, expand_max_ratio=cfg.expand_max_ratio,
                              crop_min_scale=cfg.crop_min_scale)
    if mode == "fast":
        return FastTrainTransform(size=cfg.input_size, zoom_range=cfg.zoom_range, mean=mean)
    return EvalTransform(size=cfg.input_size)


# --- distributed helpers ---------------------------------------------------------------------


def _dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


class EpochSeededDataset(Dataset):
    """Seeds the transform of every sample from ``(seed, epoch, index)`` so augmentation is replayable."""

    def __init__(self, dataset: DetectionDataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        transform = self.dataset.transform
        if transform is not None and hasattr(transform, "manual_seed"):
            transform.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
        return self.dataset[index]


# --- the loop --------------------------------------------------------------------------------


class Trainer(CheckpointedTrainer):
    """Owns the model, data, optimiser and schedule of one run.

    Args:
        cfg: the recipe.
        resume: a checkpoint to continue from, ``"auto"`` for ``<output>/last.pt`` if present.
    """

    def __init__(self, cfg: TrainConfig, resume: str | os.PathLike[str] | None = None) -> None:
        self.cfg = cfg
        self.rank, self.world_size, self.local_rank = _dist_info()
        self.distributed = self.world_size > 1
        if cfg.device == "auto":
            device = f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"
        else:
            device = cfg.device
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.is_main = self.rank == 0
        self.output = Path(cfg.output)
        if self.is_main:
            self.output.mkdir(parents=True, exist_ok=True)

        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        self.model: ACFD = create_model(cfg.model, **cfg.model_overrides).to(self.device)
        if cfg.init_weights:
            load_weights_into(self.model, cfg.init_weights)
            logger.info("initialised from %s", cfg.init_weights)
        self.channels_last = cfg.channels_last is True or (cfg.channels_last == "auto" and self.device.type == "cuda")
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net: torch.nn.Module = self.model
        if self.distributed:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

        self.records, problems = read_icartoon_csv(cfg.annotations)
        for p in problems[:20]:
            logger.warning("%s", p)
        names = read_split(cfg.train_split) if cfg.train_split else sorted(self.records)
        transform = build_transform(cfg, self.model.cfg.pixel_mean)
        self.dataset = DetectionDataset(
            cfg.images, self.records, names=names, transform=transform, cache_max_side=cfg.cache_max_side
        )
        self.dataset.preload(progress=self.is_main and cfg.progress)
        self.seeded = EpochSeededDataset(self.dataset, cfg.seed)
        self.sampler = ResumableSampler(len(self.dataset), cfg.seed, self.rank, self.world_size)
        self.iters_per_epoch = max(1, len(self.sampler) // cfg.batch_size)

        self.peak_lr = cfg.base_lr * cfg.batch_size * self.world_size / cfg.base_batch_size
        self.optimizer = build_optimizer(self.model, cfg, self.peak_lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda it: lr_factor(it, self.iters_per_epoch, cfg, self.peak_lr)
        )
        amp = cfg.amp if cfg.amp != "auto" else ("bf16" if self.device.type == "cuda" else "none")
        if amp == "fp16" and self.device.type != "cuda":
            raise ValueError("amp=fp16 needs a CUDA device; use amp=bf16 on the CPU")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.ema = None
        if cfg.ema_decay:
            self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay, use_warmup=True)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.amp_dtype is torch.float16 and self.device.type == "cuda"
        )
        self.init_progress()
        self.history: list[dict[str, Any]] = []
        self.resume(resume)

    # -- state ------------------------------------------------------------------------------

    best_key = "best_ap"

    @property
    def best_ap(self) -> float:
        """The best dev AP50 so far (-1 before any evaluation)."""
        return self.best

    def extra_state(self) -> dict[str, Any]:
        return {
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict(),
            "model_config": config_to_dict(self.model.cfg),
            "train_config": dataclasses.asdict(self.cfg),
        }

    def load_extra_state(self, ckpt: dict[str, Any]) -> None:
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
        self.scaler.load_state_dict(ckpt["scaler"])

    def _log(self, record: dict[str, Any]) -> None:
        if self.is_main:
            self.history.append(record)
        self.log_record(record)

    # -- loop -------------------------------------------------------------------------------

    def _loader(self) -> DataLoader:
        self.seeded.epoch = self.epoch
        self.sampler.set_epoch(self.epoch, self.step_in_epoch * self.cfg.batch_size)
        return DataLoader(
            self.seeded,
            batch_size=self.cfg.batch_size,
            sampler=self.sampler,
            num_workers=self.cfg.workers,
            collate_fn=detection_collate,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
            persistent_workers=False,
            prefetch_factor=4 if self.cfg.workers > 0 else None,
        )

    def train_step(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        """One optimiser step on a batch of uint8 images ``(B, 3, S, S)``."""
        self.net.train()
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        boxes = [t["boxes"].to(self.device, non_blocking=True) for t in targets]
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            cls_logits, box_deltas = self.net(self.model.normalize(images))
        losses = self.model.compute_loss(
            cls_logits.float(), box_deltas.float(), boxes, tuple(images.shape[-2:])
        )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        if self.cfg.grad_clip_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.iteration += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.iteration)
        return {k: float(v.detach()) for k, v in losses.items()}

    @property
    def eval_model(self) -> ACFD:
        """The weights to evaluate and ship: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def evaluate(self) -> float | None:
        """Dev-split AP50 (official protocol) of the current weights, on rank 0."""
        cfg = self.cfg
        if not self.is_main or not cfg.val_split:
            return None
        names = read_split(cfg.val_split)
        model = copy.deepcopy(self.eval_model).float().eval().to(memory_format=torch.contiguous_format)
        # one view per scale and the paper's NMS: cheap, and comparable across runs and code versions
        ev = evaluate_model(
            model, cfg.images, self.records, names, scales=cfg.eval_scales, device=self.device,
            batch_size=8, flip=False, nms_thresh=PAPER_NMS_THRESH,
        )
        return ev.ap50

    def _time_up(self, start: float) -> bool:
        up = self._stop_requested or (
            self.cfg.time_limit is not None and time.monotonic() - start > self.cfg.time_limit
        )
        if self.distributed:  # every rank must stop at the same step
            flag = torch.tensor([int(up)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            up = bool(flag.item())
        return up

    def fit(self) -> Path | None:
        """Train until ``epochs`` (or ``max_iters`` / ``time_limit`` / SIGTERM); returns the last checkpoint."""
        return super().fit()

    def _fit(self) -> Path | None:
        cfg = self.cfg
        start = time.monotonic()
        while self.epoch < cfg.epochs:
            loader = self._loader()
            bar = tqdm(
                total=self.iters_per_epoch, initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                disable=not (self.is_main and cfg.progress), file=sys.stderr, dynamic_ncols=True,
            )
            t0, seen, stop = time.monotonic(), 0, False
            for images, targets in loader:
                if self.step_in_epoch >= self.iters_per_epoch:
                    break
                losses = self.train_step(images, targets)
                self.step_in_epoch += 1
                seen += images.shape[0] * self.world_size
                ips = seen / max(1e-9, time.monotonic() - t0)
                bar.update(1)
                bar.set_postfix(
                    loss=f"{losses['loss']:.3f}", cls=f"{losses['loss_cls']:.3f}",
                    reg=f"{losses['loss_reg']:.3f}", img_s=f"{ips:.3g}",
                )
                if not math.isfinite(losses["loss"]):
                    raise FloatingPointError(f"loss became {losses['loss']} at iteration {self.iteration}")
                if self.iteration % cfg.log_every == 0:
                    self._log({"type": "train", "epoch": self.epoch, "iteration": self.iteration,
                               "lr": self.optimizer.param_groups[0]["lr"], "images_per_s": ips, **losses})
                if (cfg.max_iters is not None and self.iteration >= cfg.max_iters) or self._time_up(start):
                    stop = True
                    break
            bar.close()
            if stop and self.step_in_epoch < self.iters_per_epoch:
                self.save("last.pt")
                logger.info("stopped at epoch %d step %d (limit reached); resume with --resume", self.epoch, self.step_in_epoch)
                break
            self.epoch += 1
            self.step_in_epoch = 0
            record: dict[str, Any] = {"type": "epoch", "epoch": self.epoch, "iteration": self.iteration,
                                      "seconds": time.monotonic() - start}
            if cfg.eval_every and (self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs):
                ap = self.evaluate()
                if ap is not None:
                    record["dev_ap50"] = ap
                    logger.info("epoch %d: dev AP50 %.2f", self.epoch, 100 * ap)
                    if ap > self.best:
                        self.best = ap
                        self.save("best.pt")
                        if self.is_main:
                            save_weights(self.eval_model, self.output / "best.safetensors", half=True,
                                         extra={"dev_ap50": f"{ap:.4f}", "epoch": str(self.epoch)})
            self._log(record)
            if self.epoch % cfg.save_every == 0 or self.epoch == cfg.epochs or stop:
                self.save("last.pt")
            if stop:
                break
        if self.is_main:
            save_weights(self.eval_model, self.output / "last.safetensors", half=False)
            atomic_write_text(self.output / "train_config.json", json.dumps(dataclasses.asdict(cfg), indent=2))
        if self.distributed:
            dist.barrier()
        return self.output / "last.pt" if self.is_main else None


def train(cfg: TrainConfig, resume: str | os.PathLike[str] | None = None) -> Path | None:
    """Build a :class:`Trainer` and run it."""
    trainer = Trainer(cfg, resume=resume)
    try:
        return trainer.fit()
    finally:
        if trainer.distributed and dist.is_initialized():
            dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m acfd.engine.train --config FILE [--resume PATH|auto] [key=value ...]`` (torchrun-able)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--config", default=None)
    parser.add_argument("--resume", default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    train(load_train_config(args.config, args.overrides), resume=args.resume)


__all__ = [
    "EpochSeededDataset",
    "TrainConfig",
    "Trainer",
    "augment_mode",
    "build_transform",
    "load_train_config",
    "main",
    "train",
    # the shared trainer scaffolding (acfd.training), also importable from here
    "ResumableSampler",
    "build_optimizer",
    "lr_factor",
    "read_settings",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "stop_on_signals",
    "weight_decay_groups",
]


if __name__ == "__main__":
    main()
