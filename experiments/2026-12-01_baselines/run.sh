#!/usr/bin/env bash
# README's baseline table (2026-12-01 presets): each image family's `cpu` preset trained on
# 2 CPU cores (2 XLA devices), then scored with the shipped feature net
# (genjax/evaluators/weights/fmnist_classifier_cpu.*, 94.04% test accuracy). From the
# repository root:
#   bash experiments/2026-12-01_baselines/run.sh [RUNS=runs/img]
# then: python experiments/2026-11-23_baselines/table.py runs/img/* > baselines.md
set -euo pipefail
RUNS=${1:-runs/img}
export XLA_FLAGS=${XLA_FLAGS:---xla_force_host_platform_device_count=$(nproc)} JAX_PLATFORMS=cpu
PY=${PY:-.venv/bin/python}
train() { $PY -m genjax.train --config=configs/$1.py:cpu --workdir=$RUNS/$2; }
train diffusion_fmnist diffusion
train vae_fmnist vae
train gan_fmnist gan
# DDIM-50 with guidance is ~100 U-Net passes per sample: 1,000 samples on a CPU, not 10,000.
$PY -m genjax.evaluate --workdir=$RUNS/diffusion --num_samples=1000 --only=image_quality,novelty
$PY -m genjax.evaluate --workdir=$RUNS/vae --only=image_quality,novelty
$PY -m genjax.evaluate --workdir=$RUNS/gan --only=image_quality,novelty
