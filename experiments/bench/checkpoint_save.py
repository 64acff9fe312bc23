r"""Checkpoint save and restore times of a preset's train state, with orbax's
replica-parallel saving on and off (genjax/checkpoint_handlers.py: REPLICA_PARALLEL).

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \
      python -m experiments.bench.checkpoint_save --config=configs/diffusion_fmnist.py:tiny

For each mode: `--saves` saves of the freshly initialised state (the blocking part that
the train loop waits for, then the time until the async write is finished) and as many
restores onto the same mesh, median seconds. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import jax

from experiments.bench import offline_config, report


def time_mode(parts, state, replica_parallel: bool, saves: int) -> dict:
    from genjax import checkpoint, checkpoint_handlers
    checkpoint_handlers.REPLICA_PARALLEL = replica_parallel
    try:
        blocking, finished, restore = [], [], []
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = checkpoint.Checkpointer(tmp, keep=saves + 1)
            for step in range(1, saves + 1):
                t0 = time.perf_counter()
                ckpt.save(step, state, {}, {"family": parts.config.family})
                blocking.append(time.perf_counter() - t0)
                ckpt.wait()
                finished.append(time.perf_counter() - t0)
            for step in range(1, saves + 1):
                t0 = time.perf_counter()
                restored, _, _ = ckpt.restore(step, parts.abstract_state)
                jax.block_until_ready(restored)
                restore.append(time.perf_counter() - t0)
            ckpt.close()
    finally:
        checkpoint_handlers.REPLICA_PARALLEL = None
    return {"replica_parallel": replica_parallel,
            "save_blocking_s": statistics.median(blocking),
            "save_finished_s": statistics.median(finished),
            "restore_s": statistics.median(restore)}


def run(config_arg: str, saves: int) -> dict:
    from genjax import assemble, config_lib, sharding
    config = config_lib.load_file(config_arg)
    config.unlock()
    offline_config.fill_data_keys(config)
    config.lock()
    mesh = sharding.make_mesh(config.mesh)
    parts = assemble.assemble(config, mesh)
    state = parts.init_state()
    jax.block_until_ready(state)
    leaves = jax.tree_util.tree_leaves(state)
    modes = [time_mode(parts, state, rp, saves) for rp in (True, False)]
    return {"config": config_arg, "devices": jax.device_count(),
            "processes": jax.process_count(), "state_leaves": len(leaves),
            "state_mb": sum(x.nbytes for x in leaves) / 2**20, "saves": saves,
            "modes": modes, "jax": jax.__version__}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/diffusion_fmnist.py:tiny")
    p.add_argument("--saves", type=int, default=5)
    p.add_argument("--out", default="checkpoint_save.json")
    args = p.parse_args(argv)
    r = run(args.config, args.saves)
    rows = [("config", r["config"]), ("devices", r["devices"]),
            ("state", f"{r['state_leaves']} arrays, {r['state_mb']:.1f} MiB")]
    for m in r["modes"]:
        name = "replica-parallel" if m["replica_parallel"] else "one writer per array"
        rows.append((f"{name}: save blocking / finished / restore",
                     f"{m['save_blocking_s']:.3f} / {m['save_finished_s']:.3f} / "
                     f"{m['restore_s']:.3f} s"))
    report.print_rows(rows)
    report.write_json(r, args.out)


if __name__ == "__main__":
    sys.exit(main())
