"""Store the assembling thresholds (``EmbedderConfig.assemble``: ``dup_sim``, ``candidate_sim``,
``cluster_sim``) and a line on how the weights were trained in a recognition weights file, without
touching its tensors. The thresholds are the weights' own: choose them on characters the weights
were not trained on (``benchmarks/bench_assemble_review.py``), never on the benchmark's.

    python tools/set_assemble_thresholds.py WEIGHTS --dup 0.99 --candidate 0.4 --cluster 0.3 \\
        --trained "30 cosine epochs (1,020 iterations), acfd recognize train --config configs/recognition/shipped.yaml"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from acfd.utils import atomic_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path)
    parser.add_argument("--dup", type=float, required=True)
    parser.add_argument("--candidate", type=float, required=True)
    parser.add_argument("--cluster", type=float, required=True)
    parser.add_argument("--trained", default=None, help="one line stored under 'trained'")
    args = parser.parse_args()
    with safe_open(str(args.weights), framework="pt") as f:
        meta = dict(f.metadata() or {})
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    config = json.loads(meta["config"])
    config["assemble"] = {"dup_sim": args.dup, "candidate_sim": args.candidate, "cluster_sim": args.cluster}
    meta["config"] = json.dumps(config)
    if args.trained:
        meta["trained"] = args.trained
    with atomic_path(args.weights) as tmp:
        save_file(state, str(tmp), metadata=meta)
    print(f"wrote {args.weights}: assemble {config['assemble']}")


if __name__ == "__main__":
    main()
