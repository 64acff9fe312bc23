#!/usr/bin/env bash
# One command on every worker of a Cloud TPU VM slice (one JAX process per host).
#
#   # once: copy this checkout to every worker and install it (jax[tpu] at the local version)
#   experiments/launch/tpu_vm.sh --tpu=my-v5e-16 --zone=us-west4-a --setup
#   # check the slice ahead of time, on any machine: python -m genjax.aot --topology=v5e:4x4 ...
#   experiments/launch/tpu_vm.sh --tpu=my-v5e-16 --zone=us-west4-a -- \
#       python -m genjax.train --config=configs/lm_shakespeare.py:gpt2_124m \
#       --config.mesh.data=1 --config.mesh.fsdp=-1 --config.batch_size=128 \
#       --workdir=/mnt/shared/runs/gpt2_124m
#
# Every worker runs the same command with GENJAX_DISTRIBUTED=1, so genjax.runtime calls
# jax.distributed.initialize(), which reads the coordinator, the process count and this
# host's index from the TPU VM metadata. The --workdir must be one directory all hosts
# see (NFS / Filestore / gcsfuse mount): each host writes its shards of every checkpoint
# there, and a re-run of the same command resumes. Each host feeds its own rows of every
# global batch (config.batch_size stays the global batch).
# Options: --project=P, --dir=PATH (checkout on the workers, default ~/genjax),
# --worker=N: run the command on worker N only, as one process (no GENJAX_DISTRIBUTED):
# genjax.sample, genjax.evaluate and the other tools refuse a launch of several processes.
#   experiments/launch/tpu_vm.sh --tpu=my-v5e-16 --zone=us-west4-a --worker=0 -- \
#       python -m genjax.evaluate --workdir=/mnt/shared/runs/gpt2_124m
set -euo pipefail

tpu="" zone="" project="" dir='~/genjax' setup=0 worker=all
while (( $# )); do
  case "$1" in
    --tpu=*) tpu="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --dir=*) dir="${1#*=}" ;;
    --worker=*) worker="${1#*=}" ;;
    --setup) setup=1 ;;
    --) shift; break ;;
    *) echo "tpu_vm.sh: unknown option $1 (the command goes after --)" >&2; exit 2 ;;
  esac
  shift
done
[[ -n "$tpu" && -n "$zone" ]] || { echo "tpu_vm.sh: --tpu=NAME and --zone=ZONE are required" >&2; exit 2; }
gc=(gcloud compute tpus tpu-vm)
[[ "$worker" == all || "$worker" =~ ^[0-9]+$ ]] || { echo "tpu_vm.sh: --worker=$worker: all or a worker index" >&2; exit 2; }
where=(--zone="$zone" ${project:+--project="$project"})

if (( setup )); then
  repo="$(cd "$(dirname "$0")/../.." && pwd)"
  jax_version="$(python -c 'import jax; print(jax.__version__)')"
  # Anchored: a bare --exclude=data would also drop the genjax/data package.
  tar -C "$repo" --exclude=./.venv --exclude=./runs --exclude=./.git --exclude=./data -czf /tmp/genjax_src.tgz .
  "${gc[@]}" scp /tmp/genjax_src.tgz "$tpu":/tmp/genjax_src.tgz "${where[@]}" --worker=all
  "${gc[@]}" ssh "$tpu" "${where[@]}" --worker=all --command="mkdir -p $dir && tar -xzf /tmp/genjax_src.tgz -C $dir \
    && cd $dir && python3 -m pip install -q -e . 'jax[tpu]==$jax_version'"
  (( $# )) || exit 0
fi

(( $# )) || { echo "tpu_vm.sh: no command given (put it after --)" >&2; exit 2; }
distributed=""
[[ "$worker" == all ]] && distributed="GENJAX_DISTRIBUTED=1 "
cmd="cd $dir && ${distributed}exec $(printf '%q ' "$@")"
exec "${gc[@]}" ssh "$tpu" "${where[@]}" --worker="$worker" --command="$cmd"
