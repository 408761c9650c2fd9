"""Training throughput: network-only vs data-path-only vs end-to-end images/s, side by side.

    python benchmarks/bench_train.py --config configs/acfd-n-cpu.yaml --iters 30 [key=value ...]

- network: forward + loss + backward + optimiser step on one fixed batch (what the model costs);
- data: the DataLoader alone (decode or cache, augmentation, collation);
- end-to-end: ``Trainer.fit`` for ``--iters`` iterations (everything a real run does per step).
The image cache is filled before timing (its one-off cost is printed separately). When end-to-end is
close to network-only, the network sets the pace, as it should.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from acfd.engine.train import Trainer, load_train_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--iters", type=int, default=30, help="timed iterations per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("overrides", nargs="*", help="key=value training settings")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out:
        cfg = load_train_config(args.config, [*args.overrides, f"output={out}", "progress=false",
                                              "eval_every=0", "save_every=1000000"])
        t0 = time.perf_counter()
        trainer = Trainer(cfg)
        setup_s = time.perf_counter() - t0
        batch = cfg.batch_size

        loader = iter(trainer._loader())
        images, targets = next(loader)
        for _ in range(args.warmup):
            trainer.train_step(images, targets)
        t0 = time.perf_counter()
        for _ in range(args.iters):
            trainer.train_step(images, targets)
        network = args.iters * batch / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        n = 0
        for images, _ in loader:
            n += images.shape[0]
            if n >= args.iters * batch:
                break
        data = n / (time.perf_counter() - t0)

        trainer.cfg.max_iters = trainer.iteration + args.iters
        t0 = time.perf_counter()
        trainer.fit()
        end_to_end = args.iters * batch / (time.perf_counter() - t0)

    figures = {
        "config": args.config, "overrides": args.overrides, "model": cfg.model, "input_size": cfg.input_size,
        "batch_size": batch, "threads": torch.get_num_threads(), "amp": cfg.amp,
        "channels_last": cfg.channels_last, "augment": cfg.augment, "workers": cfg.workers,
        "setup_s": round(setup_s, 1), "network_img_s": round(network, 2), "data_img_s": round(data, 2),
        "end_to_end_img_s": round(end_to_end, 2),
    }
    print(f"{'network only':>14} {'data only':>10} {'end-to-end':>11}  (images/s; setup incl. cache {setup_s:.0f} s)")
    print(f"{network:14.2f} {data:10.2f} {end_to_end:11.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
