"""Recognition training: embedding network + margin head, optional dataset fusion / domain adaptation.

Fusion modes (``fusion`` setting), each batch 3/4 cartoon and 1/4 human faces (MM'20 eq. 2) when
human data is used:

- ``none``: cartoon faces only, one head (arXiv "Loss Functions").
- ``inter``: arXiv *inter-face* fusion: one network, a cartoon head and a human head,
  ``L = L_cls^c + L_cls^h`` (this is also MM'20 eq. 1, the two-domain classification loss).
- ``intra``: arXiv *intra-face* fusion: the number of classes is unchanged, each human identity is
  merged into one cartoon class (a seeded assignment, human identity i -> cartoon class
  perm[i] mod C), one head.
- ``mtda``: MM'20 multi-task domain adaptation, ``alpha L_cls + beta L_uir + gamma L_da`` (eq. 4):
  L_cls as ``inter``; L_uir (eq. 2, after the entropic open-set loss it cites) pushes the cartoon
  head's prediction on human faces, and the human head's on cartoon faces, to the uniform
  distribution; L_da (eq. 3) is the reciprocal of the domain classifier's binary cross-entropy,
  minimised by the embedding network (it fools the classifier), while the domain classifier
  itself learns with the plain cross-entropy on detached embeddings (the adversarial pair the
  paper's gradient-reversal inspiration implies; the extracted text leaves this step implicit).

The machinery is every trainer's (:mod:`acfd.training`): the seeded, resumable sampler, atomic
checkpoints, RNG state, warm-up + step/cosine learning rate, optimiser parameter groups,
``metrics.jsonl`` records, SIGTERM/SIGINT checkpoint-and-stop; only the recognition step is new.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from acfd.recognition.data import list_images, load_crops, scan_identity_folder, scan_identity_folders
from acfd.recognition.embedder import PixelEmbedder, Recognizer
from acfd.recognition.heads import create_head
from acfd.recognition.model import FEATURES, EmbedderConfig, EmbeddingNet, save_embedder
from acfd.recognition.protocols import RecognitionReport, evaluate_embeddings
from acfd.training import CheckpointedTrainer, ResumableSampler, build_optimizer, lr_factor, read_settings
from acfd.utils import atomic_write_text

logger = logging.getLogger(__name__)

FUSION_MODES = ("none", "inter", "intra", "mtda")

#: The 4 cartoon-id characters held out as unseen dev identities (np.random.default_rng(0) over the
#: 14 sorted names); every reported recognition number is measured on them.
DEV_IDENTITIES = ["ame", "calli", "ceci", "fuwawa"]


@dataclass
class RecognitionTrainConfig:
    """One recognition recipe; YAML files in configs/recognition/ override these defaults."""

    # model
    backbone: str = "resnet10t"
    embedding_dim: int = 128
    input_size: int = 64
    head: str = "cosface"  # softmax | sphereface | cosface | arcface
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    # data
    #: identity folder(s) (``ROOT/<identity>/*.jpg``); several folders add their identities together
    data: str | list[str] = "../shared/data/cartoon-id/images"
    dev_identities: list[str] = field(default_factory=lambda: list(DEV_IDENTITIES))  # [] = train on all
    distractors: str | None = None  # folder of face crops added to the dev identification gallery
    fusion: str = "none"  # none | inter | intra | mtda
    #: folder of face crops without names (e.g. ``acfd recognize crops`` of detection images): extra
    #: instances for the self-supervised loss (two augmented views of one crop are the same face)
    unlabelled: str | None = None
    ssl_weight: float = 0.0  # weight of the instance-contrastive loss (0: off)
    ssl_batch: int = 64  # unlabelled crops per step
    ssl_temperature: float = 0.1
    #: random-resized-crop range (share of the crop's side kept) of the augmentation
    crop_scale: list[float] = field(default_factory=lambda: [0.75, 1.0])
    #: weight of the colour histogram appended to the embedding at test time (0: none), stored in the weights
    colour_weight: float = 0.0
    #: the face feature the weights hand out: ``pooled`` backbone features or the ``embedding`` layer
    feature: str = "embedding"
    #: identities left out of training and of the dev figures (e.g. a benchmark's unseen characters)
    exclude_identities: list[str] = field(default_factory=list)
    #: also write ``<weights_name>-e<epoch>.safetensors`` at every dev evaluation
    snapshots: bool = False
    human_data: str = "../shared/data/lfw-faces/images"
    human_fraction: float = 0.25  # of every batch, when human faces are used (MM'20)
    alpha: float = 1.0  # MM'20 eq. 4 weights
    beta: float = 0.1
    gamma: float = 10.0
    # optimisation (field names shared with acfd.engine.train's lr_factor / build_optimizer)
    epochs: int = 20
    batch_size: int = 64
    base_lr: float = 0.002
    optimizer: str = "adamw"  # sgd (papers: lr 0.1, batch 128) | adamw (CPU budget)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_iters: int = 30
    warmup_start_lr: float = 1e-5
    lr_schedule: str = "cosine"  # step (papers: /10 at 40, 60, 80 % of the epochs) | cosine
    milestones: list[int] = field(default_factory=lambda: [8, 12, 16])
    lr_gamma: float = 0.1
    min_lr_ratio: float = 0.01
    # hardware / bookkeeping
    device: str = "cpu"
    threads: int | None = None
    channels_last: bool = False
    output: str = "runs/recognition"
    seed: int = 0
    log_every: int = 10
    eval_every: int = 5  # epochs (0: only at the end)
    max_iters: int | None = None
    time_limit: float | None = None  # seconds: checkpoint and stop
    unknown_threshold: float | None = None  # stored in the weights; None: the dev verification threshold
    weights_name: str = "model"
    progress: bool = True


def load_recognition_config(path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()) -> RecognitionTrainConfig:
    """A config from a YAML file and ``key=value`` overrides (values parsed as YAML)."""
    cfg = read_settings(RecognitionTrainConfig, path, overrides, what="recognition training")
    if cfg.fusion not in FUSION_MODES:
        raise ValueError(f"fusion must be one of {', '.join(FUSION_MODES)}, got {cfg.fusion!r}")
    if len(cfg.dev_identities) == 1:
        raise ValueError("need at least 2 dev identities (or none: train on every identity)")
    if cfg.batch_size < 4:
        raise ValueError(f"batch_size must be at least 4, got {cfg.batch_size}")
    if cfg.feature not in FEATURES:
        raise ValueError(f"feature must be one of {', '.join(FEATURES)}, got {cfg.feature!r}")
    check_inputs(cfg)
    return cfg


def check_inputs(cfg: RecognitionTrainConfig) -> None:
    """Every folder the recipe reads exists, checked before any work (one line naming the setting).

    Raises:
        ValueError: a missing folder.
    """
    folders = [("data", d) for d in ([cfg.data] if isinstance(cfg.data, str) else cfg.data)]
    if cfg.distractors:
        folders.append(("distractors", cfg.distractors))
    if cfg.ssl_weight > 0 or cfg.unlabelled:
        if not cfg.unlabelled:
            raise ValueError("ssl_weight > 0 needs an 'unlabelled' folder of face crops")
        folders.append(("unlabelled", cfg.unlabelled))
    if cfg.fusion != "none":
        folders.append(("human_data", cfg.human_data))
    hints = {
        "distractors": " (make it with `acfd recognize crops IMAGES BOXES.csv DIR`, or set distractors=null)",
        "unlabelled": " (make it with `acfd recognize crops IMAGES BOXES.csv DIR`)",
    }
    for key, folder in folders:
        if not Path(folder).is_dir():
            raise ValueError(f"{folder}: not a folder (setting {key}){hints.get(key, '')}")


def _to_tensor(crops: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous() if crops else torch.zeros(0, 3, 1, 1, dtype=torch.uint8)


def augment(images: torch.Tensor, generator: torch.Generator, crop_scale: Sequence[float] = (0.75, 1.0)) -> torch.Tensor:
    """Batch augmentation of uint8 ``(B, 3, S, S)``: horizontal flip, a random resized crop (a side
    of ``crop_scale`` of the crop's, aspect +-10 %, anywhere inside; reflect padding past the
    border), brightness/contrast +-20 %. No hue change: hair colour names characters."""
    b, _, s, _ = images.shape
    x = images.float()
    lo, hi = float(crop_scale[0]), float(crop_scale[-1])
    side = lo + (hi - lo) * torch.rand(b, generator=generator)
    aspect = torch.exp((torch.rand(b, generator=generator) - 0.5) * 0.2)
    sx, sy = side * aspect.sqrt(), side / aspect.sqrt()
    tx = (torch.rand(b, generator=generator) * 2 - 1) * (1 - sx).abs()
    ty = (torch.rand(b, generator=generator) * 2 - 1) * (1 - sy).abs()
    flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx * flip, tx, sy, ty
    grid = F.affine_grid(theta, [b, 3, s, s], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    gain = 1 + (torch.rand(b, 1, 1, 1, generator=generator) - 0.5) * 0.4
    bias = (torch.rand(b, 1, 1, 1, generator=generator) - 0.5) * 0.4 * 128
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * gain + mean + bias).clamp(0, 255)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Instance-contrastive loss (SimCLR's NT-Xent): row i of ``a`` and of ``b`` are two views of one
    face; every other row of either is a negative."""
    z = F.normalize(torch.cat([a, b]), dim=1)
    n = a.shape[0]
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def uir_loss(logits: torch.Tensor) -> torch.Tensor:
    """Unknown identity rejection (MM'20 eq. 2): cross-entropy of the head's prediction on faces of
    the other domain against the uniform distribution (the entropic open-set loss it builds on)."""
    return -F.log_softmax(logits, dim=1).mean(dim=1).mean()


def domain_adaptation_loss(domain_logits: torch.Tensor, is_cartoon: torch.Tensor) -> torch.Tensor:
    """MM'20 eq. 3: the reciprocal of the domain classifier's binary cross-entropy (small when the
    classifier cannot tell cartoon from human embeddings)."""
    bce = F.binary_cross_entropy_with_logits(domain_logits.squeeze(1), is_cartoon.float())
    return 1.0 / bce.clamp_min(1e-4)


class RecognitionModel(nn.Module):
    """Embedding network + training-only heads (cartoon, human, domain classifier)."""

    def __init__(self, cfg: RecognitionTrainConfig, num_cartoon: int, num_human: int) -> None:
        super().__init__()
        self.embedder = EmbeddingNet(
            EmbedderConfig(backbone=cfg.backbone, embedding_dim=cfg.embedding_dim, input_size=cfg.input_size,
                           feature=cfg.feature)
        )
        self.head = create_head(cfg.head, cfg.embedding_dim, num_cartoon, **cfg.head_kwargs)
        self.human_head = create_head(cfg.head, cfg.embedding_dim, num_human, **cfg.head_kwargs) if cfg.fusion in ("inter", "mtda") else None
        self.domain = (
            nn.Sequential(nn.Linear(cfg.embedding_dim, 64), nn.ReLU(inplace=True), nn.Linear(64, 1))
            if cfg.fusion == "mtda" else None
        )
        # SimCLR's projection head: the contrastive loss acts on it, the embedding stays the feature
        self.projection = (
            nn.Sequential(nn.Linear(cfg.embedding_dim, cfg.embedding_dim), nn.ReLU(inplace=True),
                          nn.Linear(cfg.embedding_dim, cfg.embedding_dim))
            if cfg.ssl_weight > 0 else None
        )


class RecognitionTrainer(CheckpointedTrainer):
    """Owns data, model, optimiser and schedule of one recognition run (see the module docstring);
    checkpoints, resume, metrics and signals come from :class:`~acfd.training.CheckpointedTrainer`."""

    best_key = "best_rank1"

    def __init__(self, cfg: RecognitionTrainConfig, resume: str | os.PathLike[str] | None = None) -> None:
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = torch.device(cfg.device)
        self.output = Path(cfg.output)
        self.output.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)

        everything = scan_identity_folders(cfg.data, min_identities=2, min_images=2)
        held_out = set(cfg.dev_identities) | set(cfg.exclude_identities)
        train_ids = [n for n in everything.identities if n not in held_out]
        self.train_set = everything.subset(train_ids)
        self.dev_set = everything.subset(list(cfg.dev_identities)) if cfg.dev_identities else None
        self.cartoon, self.cartoon_labels = self._load(self.train_set.paths, self.train_set.labels)
        self.num_cartoon = len(train_ids)
        self.uses_human = cfg.fusion != "none"
        self.num_human = 0
        if self.uses_human:
            human = scan_identity_folder(cfg.human_data, min_identities=2)
            self.human, self.human_labels = self._load(human.paths, human.labels)
            self.num_human = len(human.identities)
            if cfg.fusion == "intra":
                perm = np.random.default_rng(cfg.seed).permutation(self.num_human)
                self.human_labels = torch.as_tensor(perm[self.human_labels.numpy()] % self.num_cartoon)
        self.unlabelled: torch.Tensor | None = None
        if cfg.ssl_weight > 0:
            crops, _, errors = load_crops(list_images(cfg.unlabelled), cfg.input_size)
            for e in errors:
                logger.warning("skipped %s", e)
            if len(crops) < 2:
                raise ValueError(f"{cfg.unlabelled}: fewer than 2 readable face crops for the self-supervised loss")
            self.unlabelled = _to_tensor(crops)
        self.human_batch = int(round(cfg.batch_size * cfg.human_fraction)) if self.uses_human else 0
        self.cartoon_batch = cfg.batch_size - self.human_batch

        self.model = RecognitionModel(cfg, self.num_cartoon, max(1, self.num_human)).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.sampler = ResumableSampler(len(self.cartoon), cfg.seed)
        self.human_sampler = ResumableSampler(len(self.human), cfg.seed + 1) if self.uses_human else None
        self.unlabelled_sampler = ResumableSampler(len(self.unlabelled), cfg.seed + 2) if self.unlabelled is not None else None
        self.iters_per_epoch = max(1, len(self.cartoon) // self.cartoon_batch)
        self.peak_lr = cfg.base_lr
        self.optimizer = build_optimizer(self.model, cfg, self.peak_lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda it: lr_factor(it, self.iters_per_epoch, cfg, self.peak_lr)
        )
        self.init_progress()
        self.last_report: RecognitionReport | None = None
        self._distractors: np.ndarray | None = None
        self.resume(resume)

    def _load(self, paths: list[Path], labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        crops, kept, errors = load_crops(paths, self.cfg.input_size)
        for e in errors:
            logger.warning("skipped %s", e)
        return _to_tensor(crops), torch.as_tensor(labels[kept])

    # -- state ------------------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        return {"train_config": dataclasses.asdict(self.cfg)}

    # -- data -------------------------------------------------------------------------------

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images, labels and is-cartoon flags of the current step (seeded by epoch and step)."""
        self.sampler.set_epoch(self.epoch)
        order = self.sampler.indices()
        start = self.step_in_epoch * self.cartoon_batch
        idx = torch.as_tensor(order[start : start + self.cartoon_batch])
        images, labels = [self.cartoon[idx]], [self.cartoon_labels[idx]]
        if self.human_sampler is not None and self.human_batch:
            pos = self.iteration * self.human_batch
            per_epoch = len(self.human_sampler.indices())
            hidx = []
            for p in range(pos, pos + self.human_batch):
                self.human_sampler.set_epoch(p // per_epoch)
                hidx.append(self.human_sampler.indices()[p % per_epoch])
            hidx_t = torch.as_tensor(hidx)
            images.append(self.human[hidx_t])
            labels.append(self.human_labels[hidx_t])
        is_cartoon = torch.cat([torch.ones(self.cartoon_batch, dtype=torch.bool), torch.zeros(self.human_batch, dtype=torch.bool)])
        return torch.cat(images), torch.cat(labels), is_cartoon

    def _unlabelled_batch(self) -> torch.Tensor:
        """``ssl_batch`` unlabelled crops of the current step (epochs of their own, seeded)."""
        assert self.unlabelled is not None and self.unlabelled_sampler is not None
        per_epoch = len(self.unlabelled)
        pos = self.iteration * self.cfg.ssl_batch
        idx = []
        for p in range(pos, pos + min(self.cfg.ssl_batch, per_epoch)):
            self.unlabelled_sampler.set_epoch(p // per_epoch)
            idx.append(self.unlabelled_sampler.indices()[p % per_epoch])
        return self.unlabelled[torch.as_tensor(idx)]

    # -- step -------------------------------------------------------------------------------

    def compute_loss(self, images: torch.Tensor, labels: torch.Tensor, is_cartoon: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss of the configured fusion mode (module docstring) on one batch of augmented images."""
        return self._classification_loss(self.model.embedder(self.model.embedder.normalize(images)), labels, is_cartoon)

    def _classification_loss(self, emb: torch.Tensor, labels: torch.Tensor, is_cartoon: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg, m = self.cfg, self.model
        c, h = is_cartoon, ~is_cartoon
        losses: dict[str, torch.Tensor] = {}
        if cfg.fusion in ("none", "intra"):
            losses["loss_cls"] = F.cross_entropy(m.head(emb, labels), labels)
            losses["loss"] = losses["loss_cls"]
            return losses
        cls = F.cross_entropy(m.head(emb[c], labels[c]), labels[c]) + F.cross_entropy(m.human_head(emb[h], labels[h]), labels[h])
        losses["loss_cls"] = cls
        total = cfg.alpha * cls if cfg.fusion == "mtda" else cls
        if cfg.fusion == "mtda":
            losses["loss_uir"] = uir_loss(m.head(emb[h])) + uir_loss(m.human_head(emb[c]))
            # L_da reaches the embedder only (through the classifier's detached weights); the
            # classifier learns to tell the domains apart from detached embeddings
            frozen = {k: v.detach() for k, v in m.domain.named_parameters()}
            losses["loss_da"] = domain_adaptation_loss(torch.func.functional_call(m.domain, frozen, (emb,)), is_cartoon)
            losses["loss_domain_clf"] = F.binary_cross_entropy_with_logits(m.domain(emb.detach()).squeeze(1), is_cartoon.float())
            total = total + cfg.beta * losses["loss_uir"] + cfg.gamma * losses["loss_da"] + losses["loss_domain_clf"]
        losses["loss"] = total
        return losses

    def train_step(self) -> dict[str, float]:
        self.model.train()
        cfg, m = self.cfg, self.model
        images, labels, is_cartoon = self._batch()
        labels, is_cartoon = labels.to(self.device), is_cartoon.to(self.device)
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.iteration)
        n = len(images)
        if self.unlabelled is not None:
            # two views of every crop: the labelled ones feed the classification loss (both views),
            # all of them the instance-contrastive loss on the projection head
            images = torch.cat([images, self._unlabelled_batch()])
            views = torch.cat([augment(images, g, cfg.crop_scale), augment(images, g, cfg.crop_scale)])
        else:
            views = augment(images, g, cfg.crop_scale)
        views = views.to(self.device)
        if cfg.channels_last:
            views = views.contiguous(memory_format=torch.channels_last)
        emb = m.embedder(m.embedder.normalize(views))  # the training heads act on the embedding layer
        if self.unlabelled is not None:
            half = len(images)
            first, second = emb[:half], emb[half:]
            losses = self._classification_loss(torch.cat([first[:n], second[:n]]), labels.repeat(2), is_cartoon.repeat(2))
            losses["loss_ssl"] = info_nce(m.projection(first), m.projection(second), cfg.ssl_temperature)
            losses["loss"] = losses["loss"] + cfg.ssl_weight * losses["loss_ssl"]
        else:
            losses = self._classification_loss(emb, labels, is_cartoon)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
        self.optimizer.step()
        self.scheduler.step()
        self.iteration += 1
        return {k: float(v.detach()) for k, v in losses.items()}

    # -- evaluation -------------------------------------------------------------------------

    def recognizer(self) -> Recognizer:
        return Recognizer.from_network(self.model.embedder, model_id=f"{self.cfg.weights_name}@training", device=self.device)

    def evaluate(self) -> RecognitionReport | None:
        """Both protocols on the dev identities (+ distractors), with the current weights."""
        if self.dev_set is None:
            return None
        rec = self.recognizer()
        return evaluate_folder(rec, self.dev_set, self._distractor_embeddings(rec), seed=self.cfg.seed)

    def _distractor_embeddings(self, rec: Recognizer) -> np.ndarray | None:
        if not self.cfg.distractors:
            return None
        if not hasattr(self, "_distractor_crops"):
            self._distractor_crops = load_crops(list_images(self.cfg.distractors), self.cfg.input_size)[0]
        return rec.embed(self._distractor_crops)

    # -- loop -------------------------------------------------------------------------------

    def _fit(self) -> Path:
        """Train to ``epochs`` (or max_iters / time_limit / SIGTERM); writes last.pt and the weights."""
        cfg = self.cfg
        from tqdm import tqdm

        start = time.monotonic()
        stopped = False
        while self.epoch < cfg.epochs and not stopped:
            bar = tqdm(total=self.iters_per_epoch, initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                       disable=not cfg.progress, file=sys.stderr, dynamic_ncols=True)
            t0 = time.monotonic()
            while self.step_in_epoch < self.iters_per_epoch:
                losses = self.train_step()
                self.step_in_epoch += 1
                bar.update(1)
                bar.set_postfix(loss=f"{losses['loss']:.3f}")
                if not math.isfinite(losses["loss"]):
                    raise FloatingPointError(f"loss became {losses['loss']} at iteration {self.iteration}")
                if self.iteration % cfg.log_every == 0:
                    self.log_record({"type": "train", "epoch": self.epoch, "iteration": self.iteration,
                               "lr": self.optimizer.param_groups[0]["lr"], **losses})
                if (cfg.max_iters is not None and self.iteration >= cfg.max_iters) or self._stop_requested or (
                    cfg.time_limit is not None and time.monotonic() - start > cfg.time_limit
                ):
                    stopped = True
                    break
            bar.close()
            if stopped and self.step_in_epoch < self.iters_per_epoch:
                break
            self.epoch += 1
            self.step_in_epoch = 0
            record: dict[str, Any] = {"type": "epoch", "epoch": self.epoch, "iteration": self.iteration,
                                      "seconds": time.monotonic() - start, "epoch_seconds": time.monotonic() - t0}
            if cfg.eval_every and self.epoch % cfg.eval_every == 0 and self.epoch < cfg.epochs:
                record.update(self._eval_record())
                if cfg.snapshots:
                    self.export(f"{cfg.weights_name}-e{self.epoch}")
            self.log_record(record)
        self.save("last.pt")
        final = self._eval_record()
        if final:
            self.log_record({"type": "final", "epoch": self.epoch, "iteration": self.iteration, **final})
        weights = self.export()
        atomic_write_text(self.output / "train_config.json", json.dumps(dataclasses.asdict(cfg), indent=2))
        logger.info("weights: %s (%.1f min)", weights, (time.monotonic() - start) / 60)
        return weights

    def _eval_record(self) -> dict[str, Any]:
        report = self.evaluate()
        if report is None:
            return {}
        self.last_report = report
        logger.info("epoch %d dev: %s", self.epoch, "; ".join(report.summary_lines()[:5]))
        return {"dev_rank1": report.identification.rank(1), "dev_rank5": report.identification.rank(5),
                "dev_verification_accuracy": report.verification.accuracy, "dev_auc": report.verification.auc,
                "dev_threshold": report.verification.threshold}

    def export(self, name: str | None = None) -> Path:
        """fp16 safetensors of the embedding network, with the unknown threshold and dev figures."""
        net = self.model.embedder
        threshold = self.cfg.unknown_threshold
        extra = {"train_config": json.dumps(dataclasses.asdict(self.cfg))}
        if self.last_report is not None:
            if threshold is None:
                threshold = self.last_report.verification.threshold
            extra.update({"dev_rank1": f"{self.last_report.identification.rank(1):.4f}",
                          "dev_verification_accuracy": f"{self.last_report.verification.accuracy:.4f}",
                          "dev_auc": f"{self.last_report.verification.auc:.4f}"})
        if threshold is not None:
            net.cfg = dataclasses.replace(net.cfg, unknown_threshold=float(threshold))
        if self.cfg.colour_weight:
            net.cfg = dataclasses.replace(net.cfg, colour_weight=float(self.cfg.colour_weight))
        return save_embedder(net, self.output / f"{name or self.cfg.weights_name}.safetensors", half=True, extra=extra)


def evaluate_folder(embedder: Recognizer | PixelEmbedder, identities: Any, distractors: np.ndarray | None = None,
                    seed: int = 0, num_pairs: int = 3000) -> RecognitionReport:
    """Embed an :class:`~acfd.recognition.data.IdentitySet`'s images and run both protocols."""
    crops, kept, errors = load_crops(identities.paths)
    labels = identities.labels[kept]
    counts = np.bincount(labels, minlength=len(identities.identities))
    short = [f"{identities.identities[i]} ({int(n)})" for i, n in enumerate(counts) if n < 2]
    if short:
        unreadable = f"; unreadable: {'; '.join(errors[:3])}" + (" ..." if len(errors) > 3 else "") if errors else ""
        raise ValueError(f"identities with fewer than 2 readable images: {', '.join(short)}{unreadable}")
    report = evaluate_embeddings(embedder.embed(crops), labels, distractors, seed=seed, num_pairs=num_pairs,
                                 model_id=embedder.model_id)
    report.failed = errors
    return report


def train_recognition(cfg: RecognitionTrainConfig, resume: str | os.PathLike[str] | None = None) -> Path:
    """Build a :class:`RecognitionTrainer` and run it; returns the weights file."""
    return RecognitionTrainer(cfg, resume=resume).fit()
