#!/usr/bin/env bash
# Why reward-filtered fine-tuning (images.sh's `rft`) makes the model worse: the same recipe
# (configs/diffusion_rft_fmnist.py:cpu, from the source's EMA) at lr 0, on all of
# Fashion-MNIST train, on 1,000 real train images (100 per class, as many as the winners),
# and on the winners with their padding border set to black; each sampled and scored as
# images.sh scores its models. Run images.sh first. From the repository root:
#   bash experiments/2026-12-01_align/rft_cause.sh [SOURCE=runs/img/diffusion] [OUT=runs/img_align]
set -euo pipefail
SOURCE=${1:-runs/img/diffusion}
OUT=${2:-runs/img_align}
export XLA_FLAGS=${XLA_FLAGS:---xla_force_host_platform_device_count=$(nproc)} JAX_PLATFORMS=cpu
PY=${PY:-.venv/bin/python}
HERE=experiments/2026-12-01_align
mkdir -p "$OUT/rft_cause" "$OUT/scores"
$PY $HERE/rft_inputs.py make "$OUT/prefs/winners.npz" "$OUT/rft_cause"
run() {  # name, extra train flags...
  local name=$1; shift
  [ -f "$OUT/rft_cause/$name/final_metrics.json" ] || \
    $PY -m genjax.train --config=configs/diffusion_rft_fmnist.py:cpu \
        --workdir="$OUT/rft_cause/$name" --config.init_from="$SOURCE" \
        --config.init_from_params=ema --config.eval_every_steps=0 "$@"
  local f="$OUT/scores/rft_$name.npz"
  [ -f "$f.eval/report.json" ] && return 0
  $PY -m genjax.sample --workdir="$OUT/rft_cause/$name" --steps=20 --guidance=1 \
      --num_samples=1000 --batch_size=250 --seed=7 --out="$f"
  $PY -m genjax.evaluate --samples="$f" --only=image_quality --out="$f.eval"
}
run lr0 --config.optim.lr=0 --config.total_steps=2 \
    --config.data.train_images="$OUT/prefs/winners.npz"
run real_all
run real1000 --config.data.train_images="$OUT/rft_cause/real1000.npz"
run winners_clean --config.data.train_images="$OUT/rft_cause/winners_clean.npz"
$PY $HERE/rft_inputs.py stats "$OUT/rft_cause/real1000.npz" "$OUT/scores/source.npz" \
    "$OUT/prefs/winners.npz" "$OUT/scores/rft.npz" "$OUT/scores/rft_real_all.npz"
