#!/usr/bin/env bash
# The GPU runs behind docs/MODEL_CARD.md, as executed on the lent H100 (device tool).
# The training images travel in three parts (.devdata/c1..c3, JPEG q80 copies of
# ../shared/data/icartoonface-det/images; c1 also holds annotations/splits) and are gathered in
# /tmp/data; checkpoints live in /tmp/runs between calls. Usage: tools/gpu_session.sh PHASE [...]
set -euo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
DATA=/tmp/data
RUNS=/tmp/runs
OUT=${OUT:-/tmp/out}
mkdir -p "$DATA/images" "$RUNS" "$OUT"
phase=$1; shift || true

gather() { for c in "$@"; do [ -d ".devdata/$c/images" ] && cp -r ".devdata/$c/images/." "$DATA/images/"; [ -d ".devdata/$c/meta" ] && cp -r ".devdata/$c/meta/." "$DATA/"; done; ls "$DATA/images" | wc -l; }

train_args() {  # MODEL WORKERS EPOCHS TIME_LIMIT EXTRA...
  local m=$1 w=$2 e=$3 t=$4; shift 4
  # step decay at the paper's fractions of the schedule (200, 250, 280 of 300 epochs)
  local ms="[$((e * 2 / 3)),$((e * 5 / 6)),$((e * 14 / 15))]"
  echo milestones=$ms images=$DATA/images annotations=$DATA/train.csv train_split=$DATA/train.txt \
    val_split=$DATA/dev.txt model=$m workers=$w epochs=$e time_limit=$t output=$RUNS/$m progress=false "$@"
}

case $phase in
  smoke)  # data part 1, a short throughput run per model on the images present
    gather c1
    nvidia-smi --query-gpu=name,memory.total --format=csv || true
    python3 -c "import torch, torchvision; print(torch.__version__, torchvision.__version__)"
    ls $DATA/images | grep -Fxf - $DATA/train.txt > $DATA/train_c1.txt || true
    for m in "$@"; do
      python3 -m acfd.engine.train --config configs/$m.yaml $(train_args $m 5 1 45 train_split=$DATA/train_c1.txt eval_every=0 log_every=5 output=$RUNS/smoke-$m) 2>&1 | grep -v Warning | tail -4 &
    done
    wait
    for m in "$@"; do tail -2 $RUNS/smoke-$m/metrics.jsonl; done
    ;;
  gather) gather "$@" ;;
  train)  # MODEL:WORKERS:EPOCHS ... with TIME_LIMIT from the environment; resumes when a run exists
    for spec in "$@"; do
      IFS=: read -r m w e <<<"$spec"
      (python3 -m acfd.engine.train --config configs/$m.yaml --resume auto $(train_args $m $w $e "$TIME_LIMIT") > $RUNS/$m.log 2>&1; echo "$m exit $?" >> $RUNS/$m.log) &
    done
    wait
    for spec in "$@"; do IFS=: read -r m w e <<<"$spec"; tail -3 $RUNS/$m.log; grep dev_ap50 $RUNS/$m/metrics.jsonl | tail -3; cp $RUNS/$m/metrics.jsonl $OUT/$m-metrics.jsonl; done
    ;;
  final)  # dev AP50 at single and multi scale, then collect the small models' weights
    for m in "$@"; do
      w=$RUNS/$m/best.safetensors; [ -f "$w" ] || w=$RUNS/$m/last.safetensors
      for scales in 640x860 960 paper; do
        python3 -m acfd eval "$w" --gt $DATA/train.csv --split $DATA/dev.txt --images $DATA/images \
          --scales $scales --device cuda --no-coco --json $OUT/$m-eval-$scales.json 2>&1 | grep -E "AP50|error" | head -3 | sed "s/^/$m $scales: /"
      done
      size=$(stat -c %s "$w"); [ "$size" -lt 16000000 ] && cp "$w" "$OUT/$m.safetensors" || echo "$m weights: $size bytes, not copied"
    done
    ;;
esac
