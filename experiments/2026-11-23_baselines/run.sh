#!/usr/bin/env bash
# The README baseline table: every family's `cpu` preset trained on 2 CPU cores, then
# `python -m genjax.evaluate` (the feature net, configs/fmnist_classifier.py:cpu, is
# trained on first use and cached). From the repository root:
#   bash experiments/2026-11-23_baselines/run.sh [RUNS=runs_cpu]
# then: python experiments/2026-11-23_baselines/table.py runs_cpu/* > baselines.md
set -euo pipefail
RUNS=${1:-runs_cpu}
export XLA_FLAGS=${XLA_FLAGS:---xla_force_host_platform_device_count=$(nproc)} JAX_PLATFORMS=cpu
PY=${PY:-.venv/bin/python}
train() { $PY -m genjax.train --config=configs/$1.py:cpu --workdir=$RUNS/$2; }
train lm_shakespeare lm_shakespeare
train diffusion_fmnist diffusion
train vae_fmnist vae
train gan_fmnist gan
train t2i_fmnist t2i
$PY -m genjax.evaluate --workdir=$RUNS/lm_shakespeare
# DDIM-50 with guidance is ~100 U-Net passes per sample: 1,000 samples on a CPU (~8 min), not
# 10,000. CAS on those 1,000 (the only class-conditional cpu preset): the classifier recipe
# at 1,000 steps instead of 8,000, on the samples and (floor) on 1,000 real train images.
# One XLA device (XLA_FLAGS=), as the feature net was trained.
XLA_FLAGS= $PY -m genjax.evaluate --workdir=$RUNS/diffusion --num_samples=1000 \
    --only=image_quality,novelty,cas --set=cas.total_steps=1000
$PY -m genjax.evaluate --workdir=$RUNS/vae
$PY -m genjax.evaluate --workdir=$RUNS/gan
# text-to-image: prompt accuracy on held-out phrasings and best-of-8 (feature-net classifier)
$PY experiments/2026-11-23_t2i_eval/measure.py --workdir=$RUNS/t2i
