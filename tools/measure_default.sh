#!/usr/bin/env bash
# The CPU measurements behind docs/MODEL_CARD.md: dev AP50 of a trained model at several test
# scales (official protocol, original dev images) and timings on this machine.
# Usage: tools/measure_default.sh WEIGHTS [OUTDIR]
set -euo pipefail
w=$1 out=${2:-runs/measure}
D=${ACFD_DATA:-../shared/data/icartoonface-det}
mkdir -p "$out"
for s in 640 960 640x860 paper; do
  .venv/bin/acfd eval "$w" --gt $D/annotations/train.csv --split $D/splits/dev.txt --images $D/images \
    --scales $s --no-coco --json "$out/eval-$s.json" --plot "$out/pr-$s.png" --batch-size 4 2>&1 \
    | grep -E "^AP50|^recall" | sed "s/^/scales $s: /"
done
mkdir -p "$out/dev16"  # 16 dev images for the per-image timing
head -16 $D/splits/dev.txt | while read -r n; do ln -sf "$(realpath $D/images/$n)" "$out/dev16/$n"; done
.venv/bin/acfd bench --model "$w" --backends eager,fused,onnx --scales 640 --batch-sizes 1 --threads 2 --iters 10 --images "$out/dev16" --max-images 16 --json "$out/bench-cpu.json"
