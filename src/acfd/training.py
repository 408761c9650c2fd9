"""What every acfd trainer shares (the detector's, :mod:`acfd.engine.train`; the recognition
trainer's): reading a recipe, the seeded resumable sampler, the learning-rate schedule, optimiser
parameter groups, RNG state, atomic checkpoints, ``metrics.jsonl`` and stopping on a signal.

:class:`CheckpointedTrainer` is the base of a trainer's loop: its progress counters, a checkpoint
holding the model, optimiser, schedule, counters and RNG state (plus what the trainer adds), resume
from such a checkpoint (or ``"auto"``: the run folder's ``last.pt``), and SIGTERM / SIGINT turned
into "finish the step, checkpoint, stop" (pre-emptible jobs).

Reproducibility: the order of samples is a permutation seeded by ``(seed, epoch)``, so a run killed
at any iteration and resumed sees exactly the batches it would have seen. ``DistributedSampler``
cannot start mid-epoch, hence the small hand-written :class:`ResumableSampler`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import signal
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import Sampler

from acfd.config import dataclass_from_dict
from acfd.utils import atomic_path

logger = logging.getLogger(__name__)


def read_settings(cls: type, path: str | os.PathLike[str] | None, overrides: Sequence[str] = (),
                  what: str = "training") -> Any:
    """An instance of the settings dataclass ``cls`` from a YAML file and ``key=value`` overrides
    (values parsed as YAML; ``field.key=value`` sets one key of a dict field such as
    ``model_overrides``). Unknown settings raise ``ValueError`` (:func:`acfd.config.dataclass_from_dict`).

    Raises:
        FileNotFoundError: no such recipe file.
        ValueError: the file is not a mapping of settings, is not valid YAML, or an override or
            a setting is unknown or malformed (one line naming the file).
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: {what} config not found")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            raise ValueError(f"{p}: not valid YAML{line}: {getattr(exc, 'problem', None) or exc}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{p}: expected a mapping of settings, got {type(loaded).__name__}")
        data.update(loaded)
    names = {f.name for f in dataclasses.fields(cls)}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        head, _, rest = key.partition(".")
        if rest and head in names:
            data.setdefault(head, {})[rest] = parsed
        else:
            data[key] = parsed
    try:
        return dataclass_from_dict(cls, data, what, keys="settings")
    except TypeError as exc:  # a dataclass that checks its values itself
        raise ValueError(f"{path or 'settings'}: {exc}") from None


@contextlib.contextmanager
def stop_on_signals(callback: Any) -> Iterator[None]:
    """Route SIGTERM / SIGINT to ``callback`` inside the block (main thread only): trainers finish
    the current step, checkpoint and stop (pre-emptible jobs)."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, callback)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch permutation, split across ranks, that can start at any batch of an epoch."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.epoch = 0
        self.start = 0  # samples of this rank to skip (resume mid-epoch)
        self.per_rank = math.ceil(size / world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.size, generator=g).tolist()
        perm += perm[: self.per_rank * self.world_size - len(perm)]  # pad to split evenly
        return perm[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return self.per_rank - self.start


def lr_factor(iteration: int, iters_per_epoch: int, cfg: Any, peak_lr: float) -> float:
    """Multiplier of ``peak_lr`` at ``iteration``: linear warm-up from ``cfg.warmup_start_lr``, then
    step decay at the ``cfg.milestones`` epochs or a cosine from 1 to ``cfg.min_lr_ratio`` over the
    whole run (``cfg.lr_schedule``: ``"step"`` or ``"cosine"``)."""
    if iteration < cfg.warmup_iters:
        start = cfg.warmup_start_lr / peak_lr
        return start + (1.0 - start) * iteration / cfg.warmup_iters
    if cfg.lr_schedule == "cosine":
        total = max(1, cfg.epochs * iters_per_epoch - cfg.warmup_iters)
        progress = min(1.0, (iteration - cfg.warmup_iters) / total)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    epoch = iteration // max(1, iters_per_epoch)
    return cfg.lr_gamma ** sum(epoch >= m for m in cfg.milestones)


def weight_decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer parameter groups with weight decay on conv / linear weights only (not on norms,
    biases or fusion weights); frozen parameters left out."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, cfg: Any, lr: float) -> torch.optim.Optimizer:
    """SGD (``cfg.optimizer == "sgd"``, with ``cfg.momentum``) or AdamW (``cfg.betas``), weight
    decay ``cfg.weight_decay`` as :func:`weight_decay_groups`."""
    groups = weight_decay_groups(model, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas))
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)


def rng_state() -> dict[str, Any]:
    """The torch, NumPy, Python (and CUDA) random states, for a checkpoint."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s states."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (temp file + rename): a killed run never leaves a broken file."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


class CheckpointedTrainer:
    """The base of a trainer: progress counters, checkpoints, resume, metrics and signals.

    A subclass sets :attr:`output`, :attr:`model`, :attr:`optimizer`, :attr:`scheduler` and
    :attr:`device` (and :attr:`is_main` when it runs on several processes), names its best-so-far
    metric in :attr:`best_key`, implements :meth:`_fit`, and adds what else its checkpoint holds
    with :meth:`extra_state` / :meth:`load_extra_state`.
    """

    #: The checkpoint key of the best dev metric so far (``best_ap``, ``best_rank1``...).
    best_key = "best"
    output: Path
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    is_main: bool = True

    def init_progress(self) -> None:
        """Start counting from nothing: epoch, iteration (optimiser steps), step in the epoch, best metric."""
        self.epoch = 0
        self.iteration = 0
        self.step_in_epoch = 0
        self.best = -1.0
        self._stop_requested = False

    # -- checkpoints -----------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        """What this trainer's checkpoints hold besides the common state (EMA, configs...)."""
        return {}

    def load_extra_state(self, ckpt: dict[str, Any]) -> None:
        """Restore :meth:`extra_state` from a checkpoint (before the optimiser and schedule)."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "iteration": self.iteration,
            "step_in_epoch": self.step_in_epoch,
            self.best_key: self.best,
            "rng": rng_state(),
            **self.extra_state(),
        }

    def load(self, path: Path) -> None:
        """Continue from a checkpoint of :meth:`state_dict`."""
        if not path.is_file():
            raise FileNotFoundError(f"{path}: checkpoint to resume from not found")
        ckpt = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(ckpt["model"])
        self.load_extra_state(ckpt)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch, self.iteration = ckpt["epoch"], ckpt["iteration"]
        self.step_in_epoch, self.best = ckpt["step_in_epoch"], ckpt[self.best_key]
        set_rng_state(ckpt["rng"])
        logger.info("resumed from %s at epoch %d, iteration %d", path, self.epoch, self.iteration)

    def resume(self, resume: str | os.PathLike[str] | None) -> None:
        """Load ``resume`` (``"auto"``: the run folder's ``last.pt`` when there is one)."""
        if resume == "auto":
            resume = self.output / "last.pt" if (self.output / "last.pt").is_file() else None
        if resume is not None:
            self.load(Path(resume))

    def save(self, name: str) -> Path | None:
        """Checkpoint into the run folder as ``name`` (on the main process only)."""
        if not self.is_main:
            return None
        path = self.output / name
        save_checkpoint(path, self.state_dict())
        return path

    def log_record(self, record: dict[str, Any]) -> None:
        """Append one JSON line to the run folder's ``metrics.jsonl`` (main process only)."""
        if not self.is_main:
            return
        with open(self.output / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # -- the loop --------------------------------------------------------------------------

    def request_stop(self, signum: int, frame: Any) -> None:
        """SIGTERM / SIGINT: finish the current step, checkpoint, and stop (pre-emptible jobs)."""
        logger.warning("signal %d: saving a checkpoint and stopping", signum)
        self._stop_requested = True

    def fit(self) -> Any:
        """Train (:meth:`_fit`) with SIGTERM / SIGINT routed to :meth:`request_stop`."""
        self._stop_requested = False
        with stop_on_signals(self.request_stop):
            return self._fit()

    def _fit(self) -> Any:
        raise NotImplementedError


__all__ = [
    "CheckpointedTrainer",
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
