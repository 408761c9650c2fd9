"""Choose and store the gate of a fitted verifier (``VerifierStacking.gate_logit``) without
refitting it: the verifier's file keeps its tensors, its stacking gets the gate, and its stage
graph beside it (``NAME-verifier.onnx``) is exported again.

``acfd train-verifier`` chooses the gate itself on its held-out fifth; this is for a verifier fitted
before the gate existed. The gate is chosen on the same held-out fifth of the training split
(``acfd.engine.verifier_training.held_out``), from the boxes the shipped detector finds there at its
interactive scale with the verifier's own floor:

    python tools/set_verifier_gate.py src/acfd/weights/acfd-n.safetensors \\
        --images ../shared/data/icartoonface-det/images --split ../shared/data/icartoonface-det/splits/train.txt
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.torch import save_file

from acfd.data.image_io import load_image
from acfd.detection.verifier import METADATA_KEY, load_verifier
from acfd.engine.verifier_training import GATE_THRESHOLDS, choose_gate_logit, held_out
from acfd.predict.detector import Detector
from acfd.predict.modelfile import verifier_path
from acfd.predict.scales import Scale
from acfd.utils import atomic_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    args = parser.parse_args()
    target = verifier_path(args.weights)
    verifier = load_verifier(target)
    names = args.split.read_text().split()
    names = [n for n, keep in zip(names, held_out(names)) if keep]
    det = Detector(args.weights, threads=2)
    assert det.pipeline is not None and det.pipeline.verifier is not None
    pipe = det.pipeline
    scores, logits = [], []
    for name in names:
        image = load_image(args.images / name)
        ((boxes, raw, _),) = pipe._view([image], pipe.views[0][0], mirrored=False, single=True)
        factor = Scale.parse(pipe.calibration.reference_scale).length_factor(*image.shape[:2])
        calibrated = pipe.calibration.calibrate(raw, boxes * np.float32(factor))
        scores.append(calibrated)
        logits.append(pipe.verifier.outputs(image, boxes)[:, 0])
    scores_all, logits_all = np.concatenate(scores), np.concatenate(logits)
    stacking = verifier.stacking
    gate = choose_gate_logit(stacking, scores_all, logits_all)
    for thresh in GATE_THRESHOLDS:
        need = stacking.needed_logits(scores_all, thresh)
        skipped = need > (gate if gate is not None else stacking.max_verifier_logit)
        print(f"threshold {thresh:.2f}: {int(skipped.sum())} of {len(need)} boxes not verified; "
              f"{int((skipped & (logits_all > need)).sum())} of them would have passed")
    print(f"{len(names)} held-out images, {len(scores_all)} boxes: gate_logit {gate}")
    with safe_open(str(target), framework="pt") as f:
        meta = json.loads((f.metadata() or {})[METADATA_KEY])
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    meta["stacking"] = dataclasses.asdict(dataclasses.replace(stacking, gate_logit=gate))
    with atomic_path(target) as tmp:
        save_file(state, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})
    stage = target.with_suffix(".onnx")
    if stage.is_file():
        load_verifier(target).export_stage(stage)
        print(f"wrote {target} and {stage}")
    else:
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
