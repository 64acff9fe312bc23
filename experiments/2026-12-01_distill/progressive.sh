#!/usr/bin/env bash
# README's "4-step distilled sampler" table: from the diffusion `cpu` run (TEACHER), distil
# classifier-free guidance into one pass (Meng et al. stage 1), then halve the DDIM steps
# four times, 64 -> 32 -> 16 -> 8 -> 4, each round a resumable run that starts from the last
# (rerunning the script resumes the unfinished round and skips finished ones). From the
# repository root:
#   bash experiments/2026-12-01_distill/progressive.sh [TEACHER=runs/img/diffusion] [OUT=runs/distill]
# then the table: bash experiments/2026-12-01_distill/score.sh
set -euo pipefail
TEACHER=${1:-runs/img/diffusion}
OUT=${2:-runs/distill}
STEPS=${STEPS:-400}
export XLA_FLAGS=${XLA_FLAGS:---xla_force_host_platform_device_count=$(nproc)} JAX_PLATFORMS=cpu
PY=${PY:-.venv/bin/python}
train() {  # workdir, init_from, extra flags...
  local w=$1 src=$2; shift 2
  $PY -m genjax.train --config=configs/diffusion_distill_fmnist.py:cpu --workdir="$w" \
      --config.init_from="$src" --config.total_steps="$STEPS" "$@"
}
train "$OUT/w" "$TEACHER" --config.distill.stage=guidance
prev="$OUT/w"
for n in 64 32 16 8; do
  train "$OUT/s$((n / 2))" "$prev" --config.distill.steps=$n
  prev="$OUT/s$((n / 2))"
done
