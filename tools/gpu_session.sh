#!/usr/bin/env bash
# The GPU runs behind docs/MODEL_CARD.md, as executed on the lent H100 (device tool, 10 min a call).
# Data: .devdata/pack from tools/pack_devdata.py (carried once, copied to /tmp/data); checkpoints
# live in /tmp/runs between calls.  Usage: tools/gpu_session.sh PHASE ARGS...
#   train1 SECONDS MODEL:WORKERS...  first leg: warm-up then the base lr, for SECONDS
#   train2 SECONDS MODEL:WORKERS...  second leg: sets the epoch count from the first leg's speed so the
#                                    run ends inside SECONDS, with the paper's step decays at 2/3, 5/6
#                                    and 14/15 of it (200, 250, 280 of 300 epochs)
#   final MODEL...                   dev AP50 single- and multi-scale, weights < 16 MB to $OUT
#   recipe SECONDS MODEL[:WORKERS[:BATCH[:INIT]]]
#                                    the CPU recipe that learns (configs/acfd-n-cpu.yaml: AdamW, GroupNorm
#                                    head, EMA, the in-memory fast data path) on the GPU in ONE call: a
#                                    40-iteration probe measures images/s, then one warm-up + cosine schedule
#                                    sized to end inside SECONDS, dev AP50 at 640, weights to $OUT. INIT: start
#                                    weights (e.g. src/acfd/weights/acfd-n.safetensors). Env: LR (peak AdamW
#                                    lr, 0.002), WARMUP (iterations, 100), DEVICE (cuda), EXTRA (overrides)
set -euo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
DATA=${DATA:-/tmp/data} RUNS=${RUNS:-/tmp/runs} OUT=${OUT:-/tmp/out}
mkdir -p "$RUNS" "$OUT"
[ -d "$DATA" ] || cp -r .devdata/pack "$DATA"
phase=$1 seconds=${2:-0}; shift 2 || shift $#

args() {  # MODEL WORKERS: the settings every leg shares
  echo model=$1 workers=$2 images=$DATA/images annotations=$DATA/train.csv train_split=$DATA/train.txt \
    val_split=$DATA/dev.txt output=$RUNS/$1 progress=false log_every=50 save_every=5 eval_every=10 ${EXTRA:-}
}
epochs_for() {  # MODEL SECONDS -> epochs done + epochs that fit in SECONDS at the first leg's pace
  python3 - "$RUNS/$1/metrics.jsonl" "$2" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if '"epoch"' in l]
ep = [r for r in recs if r["type"] == "epoch"][-1]
print(int(ep["epoch"] + 0.9 * float(sys.argv[2]) * ep["epoch"] / ep["seconds"]))
PY
}
run() {  # MODEL SECONDS EPOCHS MILESTONES WORKERS
  python3 -m acfd.engine.train --config configs/$1.yaml --resume auto $(args $1 $5) epochs=$3 \
    milestones=$4 time_limit=$2 > $RUNS/$1.log 2>&1 || echo "$1 failed" >> $RUNS/$1.log
}
report() {
  for spec in "$@"; do m=${spec%%:*}; grep -E "Error|error|failed" $RUNS/$m.log | tail -3 || true
    grep '"epoch"' $RUNS/$m/metrics.jsonl | tail -2; cp $RUNS/$m/metrics.jsonl $OUT/$m-metrics.jsonl
    for w in $RUNS/$m/last.safetensors; do [ -f $w ] && [ $(stat -c %s $w) -lt 16000000 ] && cp $w $OUT/$m.safetensors; done; true
  done
}

recipe_train() {  # MODEL WORKERS BATCH INIT OVERRIDES...: the CPU recipe, scaled to a GPU batch
  local m=$1 w=$2 b=$3 init=$4; shift 4
  python3 -m acfd.engine.train --config configs/acfd-n-cpu.yaml model=$m workers=$w batch_size=$b \
    base_batch_size=$b base_lr=${LR:-0.002} warmup_iters=${WARMUP:-100} images=$DATA/images \
    annotations=$DATA/train.csv train_split=$DATA/train.txt val_split=$DATA/dev.txt device=${DEVICE:-cuda} \
    amp=bf16 channels_last=true threads=4 progress=false log_every=20 ${init:+init_weights=$init} "$@" ${EXTRA:-}
}
recipe_epochs() {  # PROBE_METRICS SECONDS TRAIN_SPLIT -> epochs that fit in 85% of SECONDS at the probe's pace
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
ips = [json.loads(l)["images_per_s"] for l in open(sys.argv[1]) if '"train"' in l][-1]
n = sum(1 for l in open(sys.argv[3]) if l.strip())
print(max(1, int(0.85 * (float(sys.argv[2]) - 30) * ips / n)))  # 30 s: filling the image cache
PY
}

case $phase in
  train1)
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    for spec in "$@"; do IFS=: read -r m w <<<"$spec"; run $m $seconds 1000 "[900,950,980]" $w & done
    wait; report "$@" ;;
  train2)
    for spec in "$@"; do IFS=: read -r m w <<<"$spec"; e=$(epochs_for $m $seconds)
      echo "$m: $e epochs"; run $m $seconds $e "[$((e*2/3)),$((e*5/6)),$((e*14/15))]" $w & done
    wait; report "$@" ;;
  final)
    for m in "$@"; do w=$RUNS/$m/last.safetensors
      for s in 640x860 960 paper; do
        python3 -m acfd eval "$w" --gt $DATA/train.csv --split $DATA/dev.txt --images $DATA/images \
          --scales $s --device cuda --no-coco --json $OUT/$m-eval-$s.json 2>&1 | grep -E "AP50|rror" | head -2 | sed "s/^/$m $s: /"
      done
    done
    for m in "$@"; do timeout 150 python3 -m acfd bench --model $RUNS/$m/last.safetensors --device cuda \
      --backends eager,fused,compile --scales 960 --scales paper --batch-sizes 1,8 --compile-mode default \
      --json $OUT/$m-bench-cuda.json 2>&1 | grep -vE "INFO|WARN" || true; done ;;
  recipe)
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    for spec in "$@"; do IFS=: read -r m w b init <<<"$spec"; w=${w:-12} b=${b:-64}
      recipe_train "$m" "$w" "$b" "$init" max_iters=40 eval_every=0 save_every=1000 output=$RUNS/$m-probe \
        > $RUNS/$m-probe.log 2>&1 || { tail -5 $RUNS/$m-probe.log; exit 1; }
      e=$(recipe_epochs $RUNS/$m-probe/metrics.jsonl $seconds $DATA/train.txt)
      echo "$m: probe $(grep '"train"' $RUNS/$m-probe/metrics.jsonl | tail -1 | grep -o '"images_per_s": [0-9.]*'), $e epochs"
      recipe_train "$m" "$w" "$b" "$init" epochs=$e eval_every=$e save_every=$e time_limit=$seconds \
        output=$RUNS/$m > $RUNS/$m.log 2>&1 || echo "$m failed" >> $RUNS/$m.log
      grep -E "dev AP50|Error|failed" $RUNS/$m.log | tail -3 || true
    done
    report "$@" ;;
esac
