#!/usr/bin/env bash
# README's half-depth student table: from the `cpu` teacher (4 x 128, context 64, 2000
# steps), students of 2 layers for the same 2000 steps: distilled off-policy (forward KL,
# tau 2, alpha 0.5), distilled with half of every batch on-policy (GKD lambda 0.5), and
# from scratch. From the repository root:
#   bash experiments/2026-12-01_distill/lm_students.sh [TEACHER=runs/lm] [OUT=runs/students]
set -euo pipefail
TEACHER=${1:-runs/lm}
OUT=${2:-runs/students}
export XLA_FLAGS=${XLA_FLAGS:---xla_force_host_platform_device_count=$(nproc)} JAX_PLATFORMS=cpu
PY=${PY:-.venv/bin/python}
$PY -m genjax.train --config=configs/distill_shakespeare.py:cpu --workdir="$OUT/kd" \
    --config.init_from="$TEACHER"
$PY -m genjax.train --config=configs/distill_shakespeare.py:cpu --workdir="$OUT/kd_on_policy" \
    --config.init_from="$TEACHER" --config.distill.on_policy=0.5
$PY -m genjax.train --config=configs/lm_shakespeare.py:cpu --workdir="$OUT/scratch" \
    --config.model.num_layers=2
