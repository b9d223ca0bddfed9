#!/usr/bin/env bash
# How the shipped checkpoint is made: generate the synthetic set, train `paper` on it, evaluate on
# TEST. Written for a one-GPU machine (the project's lent H100/H200: 16 cores, PyTorch preinstalled);
# the same script runs on CPU with small settings as a dry run.
#   VIDEOS=2000 SEED=0 CONFIG=paper BUDGET=330 OUT=/path bash tools/train_shipped.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
VIDEOS=${VIDEOS:-2000}; SEED=${SEED:-0}; CONFIG=${CONFIG:-paper}; EPOCHS=${EPOCHS:-80}
BUDGET=${BUDGET:-330}; BATCH=${BATCH:-32}; WORKERS=${WORKERS:-12}; REPEATS=${REPEATS:-2}
LR=${LR:-1e-3}; OUT=${OUT:-runs/shipped}; WORK=${WORK:-/tmp/echoedge-train}; PY=${PY:-python3}
mkdir -p "$OUT" "$WORK"
$PY -c "import torch, platform; print('torch', torch.__version__, 'python', platform.python_version(), 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
t0=$(date +%s)
[ -f "$WORK/data/FileList.csv" ] || $PY -m echoedge.cli synth "$WORK/data" --videos "$VIDEOS" --seed "$SEED" --workers "$(nproc)"
t1=$(date +%s); echo "synth: $((t1 - t0)) s"
$PY -m echoedge.cli train --data "$WORK/data" --out "$WORK/run" --config "$CONFIG" --epochs "$EPOCHS" \
  --batch-size "$BATCH" --workers "$WORKERS" --repeats "$REPEATS" --lr "$LR" --seed "$SEED" \
  --time-budget "$BUDGET" --cache-dir "$WORK/frames" --no-progress 2>&1 | tee "$OUT/train.txt"
t2=$(date +%s); echo "train: $((t2 - t1)) s"
cp "$WORK/run/best.pt" "$WORK/run/log.csv" "$WORK/run/curves.png" "$OUT/"
$PY -m echoedge.cli evaluate --checkpoint "$WORK/run/best.pt" --data "$WORK/data" --split TEST \
  --clips 4 --out "$WORK/eval" --cache-dir "$WORK/frames" 2>&1 | tee "$OUT/evaluate.txt"
t3=$(date +%s); echo "evaluate: $((t3 - t2)) s"
cp "$WORK/eval/results.json" "$OUT/test_results.json"; cp "$WORK/eval/scatter.png" "$OUT/test_scatter.png"
echo "synth $((t1 - t0)) s, train $((t2 - t1)) s, evaluate $((t3 - t2)) s"
