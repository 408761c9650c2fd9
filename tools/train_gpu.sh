#!/usr/bin/env bash
# Train a detector on CUDA GPUs with the recipe of the shipped acfd-n (configs/acfd-n-cpu.yaml:
# AdamW, warm-up + cosine, GroupNorm head, low-quality matches, EMA, images decoded once into
# memory, the one-pass FastTrainTransform), scaled to a GPU batch; then score its last weights on
# the dev split with `acfd eval` (official protocol). Needs this repository with the package
# installed (`pip install -e .`) and the iCartoonFace detection data at ../shared (or ACFD_DATA).
#
# Usage: tools/train_gpu.sh MODEL EPOCHS [KEY=VALUE ...]
#   tools/train_gpu.sh acfd-s 120                                                   # acfd-s from scratch
#   tools/train_gpu.sh acfd-n 60 init_weights=src/acfd/weights/acfd-n.safetensors   # continue acfd-n
#   GPUS=8 tools/train_gpu.sh acfd-m 120                                            # one process per GPU
# KEY=VALUE: any `acfd train` setting (TrainConfig in src/acfd/engine/train.py); they come last, so
# they override the ones set here. A killed run continues with the same command and `--resume auto`
# in EXTRA_ARGS.
#
# Environment:
#   ACFD_DATA  ../shared/data/icartoonface-det beside the repository (images/, annotations/train.csv,
#              splits/train.txt, splits/dev.txt)
#   OUTPUT     runs/MODEL-gpu      checkpoints, metrics.jsonl, last.safetensors, dev-eval.json
#   GPUS       1                   more than 1: torchrun, one process per GPU (DDP)
#   BATCH      64                  images per GPU per step
#   LR         0.002               peak AdamW learning rate at the global batch (BATCH x GPUS); a
#                                  starting point scaled from the CPU recipe's 1e-3 at batch 8, not
#                                  tuned on a GPU: watch the dev AP50 in metrics.jsonl
#   WORKERS    8                   data-loader processes per GPU
#   DEVICE     cuda                `cpu` runs the same steps on the CPU (to check the script itself
#                                  on a few images: DEVICE=cpu ACFD_DATA=tiny/ ... acfd-tiny 1 max_iters=2)
#   EXTRA_ARGS                     options for `acfd train` itself, e.g. `--resume auto`
set -euo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi
model=$1 epochs=$2
shift 2
repo=$(cd "$(dirname "$0")/.." && pwd)
data=${ACFD_DATA:-$repo/../shared/data/icartoonface-det}
out=${OUTPUT:-runs/$model-gpu}
gpus=${GPUS:-1} batch=${BATCH:-64} device=${DEVICE:-cuda}
for f in "$data/images" "$data/annotations/train.csv" "$data/splits/train.txt" "$data/splits/dev.txt"; do
  [ -e "$f" ] || { echo "error: $f: not found (set ACFD_DATA to the iCartoonFace detection folder)" >&2; exit 1; }
done
settings=(
  model="$model" epochs="$epochs" eval_every="$epochs" save_every=5
  device="$device" amp=bf16 channels_last=true threads=4 workers="${WORKERS:-8}"
  batch_size="$batch" base_batch_size=$((batch * gpus)) base_lr="${LR:-0.002}" warmup_iters=100
  images="$data/images" annotations="$data/annotations/train.csv"
  train_split="$data/splits/train.txt" val_split="$data/splits/dev.txt"
  output="$out" progress=false log_every=20
)
if [ "$gpus" -gt 1 ]; then
  train=(torchrun --nproc_per_node "$gpus" -m acfd.engine.train)
else
  train=(acfd train)
fi
# shellcheck disable=SC2086  # EXTRA_ARGS is a list of options
"${train[@]}" --config "$repo/configs/acfd-n-cpu.yaml" ${EXTRA_ARGS:-} "${settings[@]}" "$@"

acfd eval "$out/last.safetensors" --gt "$data/annotations/train.csv" --split "$data/splits/dev.txt" \
  --images "$data/images" --device "$device" --json "$out/dev-eval.json"
