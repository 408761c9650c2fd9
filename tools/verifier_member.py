"""Write one member of an ensemble verifier as a verifier of its own (same stacking, same detector
fingerprint), and its stage graph beside it.

The shipped ``acfd-n-verifier.safetensors`` is member 0 of the two-network ``r4-32-96x2`` that
``acfd train-verifier`` fitted: on the dev split the second network added 0.13 point of AP50 at the
interactive setting for 47 % more verifier time (docs/experiments/detector.md, "Speed"):

    python tools/verifier_member.py runs/verifier/acfd-n-verifier-x2.safetensors \\
        src/acfd/weights/acfd-n-verifier.safetensors --member 0
    python tools/set_verifier_gate.py src/acfd/weights/acfd-n.safetensors \\
        --images ../shared/data/icartoonface-det/images --split ../shared/data/icartoonface-det/splits/train.txt
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from acfd.detection.verifier import VERIFIERS, BoxVerifier, FaceVerifier, load_verifier, save_verifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ensemble", type=Path, help="a verifier file with several members")
    parser.add_argument("out", type=Path, help="the single-network verifier to write")
    parser.add_argument("--member", type=int, default=0)
    args = parser.parse_args()
    source = load_verifier(args.ensemble)
    if not 0 <= args.member < source.cfg.members:
        raise SystemExit(f"{args.ensemble}: has {source.cfg.members} member(s); --member {args.member} is not one")
    single = [c for c in VERIFIERS.values()
              if dataclasses.replace(c, name="", members=1) == dataclasses.replace(source.cfg, name="", members=1)]
    cfg = single[0] if single else dataclasses.replace(source.cfg, members=1)
    model = FaceVerifier(cfg)
    model.nets[0].load_state_dict(source.model.nets[args.member].state_dict())
    note = f"{source.stacking.fitted_on}; member {args.member} of the {source.cfg.name} ensemble"
    stacking = dataclasses.replace(source.stacking, fitted_on=note)
    save_verifier(model, stacking, args.out, detector=source.detector)
    BoxVerifier(model, stacking, source.detector).export_stage(args.out.with_suffix(".onnx"))
    print(f"wrote {args.out} ({cfg.name}) and {args.out.with_suffix('.onnx')}")


if __name__ == "__main__":
    main()
