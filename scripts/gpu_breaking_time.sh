#!/usr/bin/env bash
# The 28x28 breaking time with a wider network and several seeds, on a GPU in under 10 minutes.
#
# Per dataset and seed: train the window recipe of docs/appendix/breaking_time_28.md (U-Net, --t-train 0.4 0.9, 3,000
# steps) at width $CH, then measure its breaking time with the flow search (steps_sweep --search flow) and merge the
# row into $OUT/breaking_vs_steps.json. All networks train first (fast), then the scans run while time is left: a
# global deadline ($DEADLINE seconds from the start) bounds every stage, so a slow scan costs its own row, not the
# others. What comes back is small: the rows, the log, the exported EMA weights of each network (< 8 files).
#
# On the GPU machine (where the data are not installed, carry them: docs/appendix/breaking_time_28.md):
#   FASHION_MNIST_DIR=.gpu-data/fashion-mnist OUT=$OUT scripts/gpu_breaking_time.sh
# The same stages on a CPU, tiny (tests/test_gpu_script.py runs this):
#   DEVICE=cpu SMOKE=1 OUT=/tmp/gpu-smoke scripts/gpu_breaking_time.sh
set -euo pipefail

: "${OUT:?set OUT to the folder of the results}"
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
DATASETS=${DATASETS:-fashion-mnist}
SEEDS=${SEEDS:-0 1 2 3}
CH=${CH:-32}
STEPS=${STEPS:-3000}
DEADLINE=${DEADLINE:-540}
SCAN=(--search flow --n-starts 32 --n-grid 8 --t-max 0.8 --t-min 0.45)
if [[ ${SMOKE:-0} == 1 ]]; then  # every stage once, in seconds, to check the script (not a result)
  SEEDS=0 CH=8 STEPS=20 CKPT=20 SCAN=(--search flow --n-starts 1 --n-grid 2 --t-max 0.8 --t-min 0.45 --tol-t 0.2)
fi
declare -A PREDICTION=([fashion-mnist]=fashion [mnist]=mnist)  # the keys of benchmarks/results.json
for data in $DATASETS; do
  [[ -n ${PREDICTION[$data]+set} ]] || { echo "DATASETS: $data is not one of fashion-mnist, mnist" >&2; exit 2; }
done
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
RUNS=${RUNS:-runs}  # the training runs (checkpoints: not returned), relative to the repository root
cd "$(dirname "$0")/.."  # the repository root: the packages, benchmarks/results.json
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 JAX_PLATFORMS=cpu TQDM_MININTERVAL=30
START=$SECONDS
left() { echo $((DEADLINE - (SECONDS - START))); }
budget() { local s; s=$(left); echo $((s > 1 ? s : 1)); }  # timeout 0 would mean no limit
log() { echo "[$((SECONDS - START)) s] $*" | tee -a "$OUT/log.txt"; }
log "device $DEVICE, datasets $DATASETS, seeds $SEEDS, ch $CH, steps $STEPS"

runs=()
for data in $DATASETS; do
  for seed in $SEEDS; do
    run="$RUNS/gpu-$data-ch$CH-window-s$seed"
    if (($(left) <= 0)); then log "no time left to train $run"; break 2; fi
    timeout -k 10 "$(budget)" "$PY" -m empirical train --dataset "$data" --net unet --ch "$CH" --mult 1 2 2 --blocks 1 \
      --batch-size 64 --lr 0.001 --warmup 200 --ema-decay 0.995 --grad-clip 1.0 --steps "$STEPS" \
      --ckpt-every "${CKPT:-1000}" --snapshot-every "$STEPS" --t-train 0.4 0.9 --device "$DEVICE" --seed "$seed" \
      --out "$run" >>"$OUT/log.txt" 2>&1 || { log "training $run stopped (exit $?)"; continue; }
    cp "$run/snapshots/step$STEPS.pt" "$OUT/$data-ch$CH-window-s$seed.pt"
    runs+=("$data:$run")
    log "trained $run"
  done
done
for entry in "${runs[@]}"; do
  data=${entry%%:*} run=${entry#*:}
  if (($(left) <= 0)); then log "no time left to scan $run"; break; fi
  timeout -k 10 "$(budget)" "$PY" -m empirical steps-sweep --dataset "$data" "$run/snapshots/step$STEPS.pt" "${SCAN[@]}" \
    --device "$DEVICE" --prediction "benchmarks/results.json:${PREDICTION[$data]}" \
    --out "$OUT/breaking_vs_steps.json" >>"$OUT/log.txt" 2>&1 || { log "scan of $run stopped (exit $?)"; continue; }
  log "scanned $run"
done
log "done"
