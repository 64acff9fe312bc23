#!/usr/bin/env bash
# Slurm: the same genjax command in every task, one JAX process per task. Submit from the
# repository root (the job starts in the submit directory).
#
#   # 2 nodes x 8 GPUs, one process per node driving its 8 GPUs:
#   sbatch --nodes=2 experiments/launch/slurm.sh \
#       python -m genjax.train --config=configs/lm_shakespeare.py:gpt2_124m \
#       --config.mesh.data=-1 --workdir=/shared/runs/gpt2_124m
#   # or one process per GPU: sbatch --nodes=2 --ntasks-per-node=8 --gpus-per-task=1 ...
#   # a sweep as an array job, one run per task (line i of the file for task i):
#   python -m experiments.sweep --config=configs/lm_shakespeare.py:gpu --sweep=lr \
#       --root=/shared/sweeps --seeds=3 --emit=commands > runs.txt
#   sbatch --array=1-$(wc -l < runs.txt) --gpus-per-node=1 experiments/launch/slurm.sh --commands=runs.txt
#
# With several tasks, JAX_COORDINATOR_ADDRESS is the first node of the job (port from the
# job id), JAX_NUM_PROCESSES = SLURM_NTASKS and JAX_PROCESS_ID = SLURM_PROCID, which
# genjax.runtime hands to jax.distributed.initialize(). Export GENJAX_DISTRIBUTED=1
# instead to let JAX read the same Slurm variables itself. The workdir must be on a
# filesystem every node sees. Ten minutes before the time limit Slurm sends SIGTERM;
# genjax.train checkpoints and exits 143, and re-submitting (or --requeue) resumes.
#SBATCH --job-name=genjax
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@600
#SBATCH --output=slurm-%x-%A_%a.out
set -euo pipefail

if [[ "${1:-}" == --commands=* ]]; then
  file="${1#--commands=}"
  task="${SLURM_ARRAY_TASK_ID:?--commands=FILE needs an array job: sbatch --array=1-N}"
  line="$(sed -n "${task}p" "$file")"
  [[ -n "$line" ]] || { echo "slurm.sh: $file has no line $task" >&2; exit 2; }
  set -- bash -c "exec $line"
fi
(( $# )) || { echo "usage: sbatch [options] slurm.sh COMMAND... | --commands=FILE" >&2; exit 2; }

ntasks="${SLURM_NTASKS:-1}"
if (( ntasks > 1 )) && [[ "${GENJAX_DISTRIBUTED:-}" != 1 ]]; then
  head="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
  export JAX_COORDINATOR_ADDRESS="$head:${GENJAX_COORDINATOR_PORT:-$((20000 + SLURM_JOB_ID % 20000))}"
  export JAX_NUM_PROCESSES="$ntasks"
fi
echo "slurm.sh: $ntasks task(s) on $SLURM_JOB_NODELIST${JAX_COORDINATOR_ADDRESS:+, coordinator $JAX_COORDINATOR_ADDRESS}: $*"
# JAX_PROCESS_ID differs per task, so it is set inside each task.
srun --kill-on-bad-exit=1 bash -c \
  'if [[ -n "${JAX_NUM_PROCESSES:-}" ]]; then export JAX_PROCESS_ID="$SLURM_PROCID"; fi; exec "$@"' \
  slurm-task "$@"
