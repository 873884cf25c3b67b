#!/usr/bin/env bash
# The GPU benchmark, one prepared script for the day a GPU is lent (benchmarks/README.md, "GPU"):
#   1. throughput (samples/s) of a full training step: wae-mmd, gm-wae with the exact and the sparse estimator over
#      k (with the main job's extra terms), and pythae's WAE_MMD on the same networks when pythae is installed —
#      width 1.0, batch 100 and 1,000, fp32 and bf16 autocast;
#   2. one GM-WAE run at the paper's setting (preset gm-wae-mnist, full width) for as many steps as fit;
#   3. a large collection streamed from disk (benchmarks/large_collection.py): 1,000,000 28x28 uint8 digits in a
#      .npy (784 MB, written once), the main job's model for 300 steps on 1, 2 and 4 GPUs (DDP, each process reading
#      its own shard) when present: training and encoding images/s, peak GPU memory and peak RSS per process.
# Under 12 minutes on one GPU. Writes into $OUT (default runs/gpu): gpu_throughput.md, gm-wae-paper/, large.npy,
# large_collection.md, large/.
#
#   bash benchmarks/gpu.sh            # on a GPU machine
#   bash benchmarks/gpu.sh --dry-run  # tiny sizes on the CPU, seconds: checks that every step runs (tests do this)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python}
if [ "${1:-}" = "--dry-run" ]; then
  DEV=cpu ACC=cpu WIDTH=0.0625 BATCHES=8,16 REPEATS=1 MINUTES=2 STEPS=3 SETS="--set data.limit=64 --set data.eval_limit=100 --set model.width=0.0625 --set batch_size=16 --set pretrain_steps=2 --set train.sample_metrics=[] --set figures=false"
  # the large collection: 1,500 examples streamed (WAE_IN_MEMORY_BYTES=0; 1,000 of them the validation carve), 1 and
  # 2 CPU processes (DDP over gloo)
  LARGE="--n 1500 --steps 3 --warmup 1 --batch-size 50 --encode-n 500 --width 0.0625"
  NDEV=2
  export WAE_IN_MEMORY_BYTES=0 GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-lo}
else
  DEV=cuda ACC=gpu WIDTH=1.0 BATCHES=100,1000 REPEATS=20 MINUTES=4 STEPS=-1 SETS=""
  LARGE="--n 1000000 --steps 300 --warmup 20 --batch-size 100 --encode-n 200000"
  NDEV=$($PY -c "import torch; print(torch.cuda.device_count())")
  $PY -c "import pythae" 2>/dev/null || echo "gpu.sh: pythae is not installed: its row is skipped (pip install pythae)"
fi
echo "== throughput ($DEV, width $WIDTH, batches $BATCHES) =="
$PY benchmarks/throughput.py --device-table --device "$DEV" --width "$WIDTH" --batches "$BATCHES" \
    --precisions fp32,bf16 --repeats "$REPEATS" --table-out "$OUT/gpu_throughput.md"
echo "== GM-WAE at the paper's setting (preset gm-wae-mnist, full width, ${MINUTES} min) =="
$PY -m wae.cli train gm-wae --preset gm-wae-mnist --dataset mnist-5k --accelerator "$ACC" --out "$OUT/gm-wae-paper" \
    --set max_minutes="$MINUTES" --set max_steps="$STEPS" --set epochs=1000 --set checkpoint_every_minutes=0 \
    --quiet $SETS
$PY - "$OUT" <<'PY'
import json, sys
m = json.load(open(f"{sys.argv[1]}/gm-wae-paper/metrics.json"))
keys = ["train/steps", "train/wall_seconds", "test/acc_hungarian", "test/nmi", "test/active_components",
        "test/recon_mse"]
print("gm-wae-paper: " + "  ".join(f"{k}={m[k]:.4g}" for k in keys if k in m))
PY
echo "== a large collection streamed from disk (1, 2, 4 devices of the $NDEV present) =="
rm -f "$OUT/large_collection.md"
for D in 1 2 4; do
  if [ "$D" -le "$NDEV" ]; then
    $PY benchmarks/large_collection.py --devices "$D" --accelerator "$ACC" --file "$OUT/large.npy" \
        --out "$OUT/large" --table "$OUT/large_collection.md" $LARGE
  fi
done
cat "$OUT/large_collection.md"
echo "gpu.sh: done ($OUT)"
