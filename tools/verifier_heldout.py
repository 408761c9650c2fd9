"""Compare verifier variants, seeds and ensembles on the held-out fifth of the training images, the
way ``acfd train-verifier`` chooses its stacking (nothing from the dev split is used), for
docs/experiments/verifier.md.

    python tools/verifier_heldout.py WEIGHTS --models r4-32 r4-32@1 "r4-32:crop_size=96" \\
        [--epochs 16] [--ensembles "r4-32+r4-32@1"] [--work runs/verifier/heldout]

A model is a registered variant with optional ``:key=value`` overrides of its
:class:`~acfd.detection.verifier.VerifierConfig` (``channels=48-96-192-384``) or of
``train_verifier``'s arguments (:data:`TRAIN_KEYS`: ``negatives_per_positive=6``, ``epochs=24``) and ``@seed``. Each
is trained on the other four fifths of ``splits/train.txt`` (the same folds as ``acfd
train-verifier``); its outputs on the held-out boxes are cached under ``--work`` (so a later call
only trains what is new), as are the crops of each crop geometry. An ensemble averages its
members' outputs (logit and offsets) before the stacking.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from acfd.data.formats import read_icartoon_csv, read_split
from acfd.detection.verifier import VerifierConfig, get_verifier_config
from acfd.engine.verifier_training import collect_samples, fit_stacking, held_out, predict, train_verifier
from acfd.predict.modelfile import ModelFile
from acfd.utils import atomic_path

DATA = Path(os.environ.get("ACFD_DATA", "../shared/data/icartoonface-det"))


#: ``train_verifier`` arguments a model spec may override (the others are VerifierConfig fields).
TRAIN_KEYS = {"epochs": int, "lr": float, "weight_decay": float, "negatives_per_positive": int, "batch_size": int}


def parse_model(spec: str) -> tuple[VerifierConfig, int, dict[str, float]]:
    """``name[:key=value...][@seed]`` -> (config, seed, train_verifier overrides)."""
    spec, _, seed = spec.partition("@")
    name, *overrides = spec.split(":")
    values = get_verifier_config(name).to_dict()
    train: dict[str, float] = {}
    for item in overrides:
        key, _, value = item.partition("=")
        if key in TRAIN_KEYS:
            train[key] = TRAIN_KEYS[key](value)
        elif key == "channels":
            values[key] = [int(c) for c in value.split("-")]
        elif key == "context":
            values[key] = float(value)
        else:
            values[key] = int(value)
    values["name"] = spec
    return VerifierConfig.from_dict(values), int(seed or 0), train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights")
    parser.add_argument("--models", nargs="+", default=["r4-32"])
    parser.add_argument("--ensembles", nargs="*", default=[], help="members joined by +")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--work", default="runs/verifier/heldout")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    digest = ModelFile.open(args.weights).fingerprint[:12]
    gt, _ = read_icartoon_csv(DATA / "annotations" / "train.csv")
    names = read_split(DATA / "splits" / "train.txt")
    outputs: dict[str, np.ndarray] = {}
    reference = None
    for spec in args.models:
        cfg, seed, train = parse_model(spec)
        train = {"epochs": args.epochs, **train}
        geometry = f"{digest}-s{cfg.crop_size}-c{cfg.context}-l{cfg.long_side}"
        sample_file = work / f"samples-{geometry}.pt"
        if sample_file.exists():
            samples = torch.load(sample_file, weights_only=False)
        else:
            samples = collect_samples(args.weights, DATA / "images", gt, names, cfg, progress=True)
            with atomic_path(sample_file) as tmp:
                torch.save(samples, tmp)
        hold = held_out(samples.names)[samples.image]
        rows = np.nonzero(hold & samples.is_detection)[0]
        if reference is None:
            reference = (samples, rows)
        extra = "".join(f"|{k}={v}" for k, v in sorted(train.items()) if k != "epochs")  # old cache names kept
        fields = {k: v for k, v in dataclasses.asdict(cfg).items() if (k, v) != ("members", 1)}
        key = hashlib.sha256(f"{fields}|{seed}|{train['epochs']}{extra}".encode()).hexdigest()[:12]
        out_file = work / f"out-{geometry}-{key}.npy"
        if out_file.exists():
            out = np.load(out_file)
        else:
            t0 = time.perf_counter()
            model = train_verifier(samples, cfg, mask=~hold, seed=seed, progress=True, **train)
            out = predict(model, samples.crops[rows]).double().numpy()
            with atomic_path(out_file) as tmp, open(tmp, "wb") as f:
                np.save(f, out)
            logging.info("%s: trained in %.0f s", spec, time.perf_counter() - t0)
        outputs[spec] = out
    samples, rows = reference
    images = np.nonzero(held_out(samples.names))[0]
    groups = {spec: [spec] for spec in args.models} | {e: e.split("+") for e in args.ensembles}
    print(f"held-out fifth: {len(images)} images, {len(rows)} boxes; AP50")
    for label, members in groups.items():
        out = np.mean([outputs[m] for m in members], 0)
        _, ap, best = fit_stacking(samples, rows, out, gt, images)
        steps = "  ".join(f"{k.removeprefix('verified (box step ').removesuffix(')')}: {v:.2f}" for k, v in ap.items())
        print(f"{label:>40}  {steps}  (best step {best})")


if __name__ == "__main__":
    main()
