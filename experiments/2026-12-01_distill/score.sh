#!/usr/bin/env bash
# README's distilled-sampler table: 1,000 class-conditional samples (classes in turn) per
# row at guidance 4 (the diffusion preset's), written by `genjax.sample --out=X.npz` (which
# records images/s after the first, compiling call) and scored by `genjax.evaluate
# --samples` with the shipped feature net. From the repository root, after progressive.sh:
#   bash experiments/2026-12-01_distill/score.sh [TEACHER=runs/img/diffusion] [OUT=runs/distill]
set -euo pipefail
TEACHER=${1:-runs/img/diffusion}
OUT=${2:-runs/distill}
N=${N:-1000}
export XLA_FLAGS=${XLA_FLAGS:---xla_force_host_platform_device_count=$(nproc)} JAX_PLATFORMS=cpu
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT/scores"
score() {  # name, workdir, steps, [n]
  local f="$OUT/scores/$1.npz"
  [ -f "$f.eval/report.json" ] && return 0
  $PY -m genjax.sample --workdir="$2" --steps="$3" --guidance=4 --num_samples="${4:-$N}" \
      --batch_size=100 --out="$f"
  $PY -m genjax.evaluate --samples="$f" --only=image_quality --out="$f.eval"
}
score teacher_ddim4 "$TEACHER" 4
score student_4 "$OUT/s4" 4
score student_8 "$OUT/s8" 8
score teacher_ddim8 "$TEACHER" 8
score guidance_student_64 "$OUT/w" 64
# teacher DDIM-50 at guidance 4: two U-Net passes a step, ~8 min per 1,000 samples here
score teacher_ddim50 "$TEACHER" 50
