#!/usr/bin/env bash
# README's image-alignment table: from the diffusion `cpu` run (SOURCE, its EMA params), a
# reward classifier trained separately from the evaluators' feature net, K = 4 samples per
# prompt ranked by it, then Diffusion-DPO on best-vs-worst pairs (a beta sweep) and the
# reward-filtered fine-tuning baseline on the best of each 4; every model sampled the same
# way (guidance 1 = the conditional model, DDIM-20, 1,000 samples, classes in turn) and
# scored by genjax.evaluate --samples with the shipped feature net. Resumable: finished
# steps are skipped. From the repository root:
#   bash experiments/2026-12-01_align/images.sh [SOURCE=runs/img/diffusion] [OUT=runs/img_align]
set -euo pipefail
SOURCE=${1:-runs/img/diffusion}
OUT=${2:-runs/img_align}
BETAS=${BETAS:-"500 5000 50000"}
export XLA_FLAGS=${XLA_FLAGS:---xla_force_host_platform_device_count=$(nproc)} JAX_PLATFORMS=cpu
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT/scores"
[ -f "$OUT/reward_clf/final_metrics.json" ] || \
  $PY -m genjax.train --config=configs/fmnist_reward_classifier.py:cpu --workdir="$OUT/reward_clf"
[ -f "$OUT/prefs/data_card.json" ] || \
  $PY -m genjax.data.sample_image_preferences --workdir="$SOURCE" --reward="$OUT/reward_clf" \
      --out="$OUT/prefs" --k=4 --prompts_per_class=100 --guidance=1 --steps=20 --margin=0.1 --seed=0
score() {  # name, workdir
  local f="$OUT/scores/$1.npz"
  [ -f "$f.eval/report.json" ] && return 0
  $PY -m genjax.sample --workdir="$2" --steps=20 --guidance=1 --num_samples=1000 \
      --batch_size=250 --seed=7 --out="$f"
  $PY -m genjax.evaluate --samples="$f" --only=image_quality --out="$f.eval"
}
score source "$SOURCE"
for beta in $BETAS; do
  $PY -m genjax.train --config=configs/diffusion_dpo_fmnist.py:cpu --workdir="$OUT/dpo_b$beta" \
      --config.init_from="$SOURCE" --config.init_from_params=ema \
      --config.data.pairs="$OUT/prefs" --config.diffusion_dpo.beta="$beta"
  score "dpo_b$beta" "$OUT/dpo_b$beta"
  if [ "$beta" = "${BETAS%% *}" ]; then  # the baseline after the first DPO run
    $PY -m genjax.train --config=configs/diffusion_rft_fmnist.py:cpu --workdir="$OUT/rft" \
        --config.init_from="$SOURCE" --config.init_from_params=ema \
        --config.data.train_images="$OUT/prefs/winners.npz"
    score rft "$OUT/rft"
  fi
done
