"""Average the weights of several training runs of one architecture (a "model soup", Wortsman et al.
2022): how the shipped acfd-n was made from its last runs (docs/experiments/detector.md).

    python tools/soup.py A.safetensors B.safetensors [C.safetensors ...] -o soup.safetensors [--weights 0.3 0.7]

The runs must share their start (warm restarts from one file), so that their average stays in one
basin. Every floating-point tensor becomes the weighted mean of the inputs' (in float32; ``--half``
stores float16), integer tensors (counters) are taken from the first file. The output keeps the
first file's model name and config; a score calibration or a verifier fitted for an input does not
carry over (fit them again for the soup: ``acfd calibrate``, ``acfd train-verifier``). Measure the
soup against its inputs on dev (``tools/measure_model.py``) before shipping it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from acfd.utils import atomic_path

#: Metadata kept from the first input: what the loader needs to rebuild the network.
KEPT_METADATA = ("model", "config")


def soup(paths: list[Path], weights: list[float]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The weighted mean of the state dicts in ``paths`` and the metadata of the result.

    Raises:
        ValueError: the files do not hold the same tensors (names and shapes), or bad weights.
    """
    if len(weights) != len(paths) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"need one non-negative weight per file ({len(paths)}), got {weights}")
    total = sum(weights)
    states = [load_file(str(p)) for p in paths]
    first = states[0]
    for path, state in zip(paths[1:], states[1:]):
        if state.keys() != first.keys():
            raise ValueError(f"{path}: other tensors than {paths[0]} ({len(state)} vs {len(first)})")
        bad = [k for k in first if state[k].shape != first[k].shape]
        if bad:
            raise ValueError(f"{path}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, "
                             f"{paths[0]} {tuple(first[bad[0]].shape)}")
    out = {}
    for key, tensor in first.items():
        if tensor.is_floating_point():
            out[key] = sum(w / total * s[key].float() for w, s in zip(weights, states))
        else:
            out[key] = tensor
    with safe_open(str(paths[0]), "pt") as f:
        meta = f.metadata() or {}
    metadata = {k: meta[k] for k in KEPT_METADATA if k in meta}
    metadata["souped_from"] = json.dumps([[p.name, round(w / total, 4)] for p, w in zip(paths, weights)])
    return out, metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, help="weights files (.safetensors) of one architecture")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--weights", type=float, nargs="+", help="one per input (default: equal)")
    parser.add_argument("--half", action="store_true", help="store float16 (as the shipped file)")
    args = parser.parse_args(argv)
    if len(args.inputs) < 2:
        parser.error("need at least two weights files")
    if args.output.resolve() in {p.resolve() for p in args.inputs}:
        parser.error(f"{args.output}: would overwrite an input")
    for p in args.inputs:
        if not p.is_file():
            print(f"error: {p}: file not found", file=sys.stderr)
            return 1
    try:
        state, metadata = soup(args.inputs, args.weights or [1.0] * len(args.inputs))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    with atomic_path(args.output) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)
    print(f"{args.output}: mean of {len(args.inputs)} files ({metadata['souped_from']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
