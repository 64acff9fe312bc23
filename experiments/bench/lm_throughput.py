r"""LM training throughput (tokens/s, MFU) of a preset on random tokens.

  python -m experiments.bench.lm_throughput --preset=gpt2_124m --batch_size=12 --steps=50
  python -m experiments.bench.lm_throughput --preset=cpu --steps=20 --out=bench_cpu.json

Measures the jitted, sharded `train_step` exactly as `genjax.train` runs it (same
assemble path), excluding compilation and data loading (tokens are generated on device
once). Prints a table and writes JSON. MFU uses 6N + 12*L*d*T FLOPs per token and the
device's peak dense bf16 FLOP/s (genjax/flops.py).
"""
from __future__ import annotations

import argparse
import ast
import os
import platform
import sys
import time

import jax
import numpy as np

from experiments.bench import offline_config, report


def apply_overrides(config, overrides: list[str]) -> None:
    """`key.path=value` strings into an unlocked config, each cast to the key's type."""
    for item in overrides:
        key, value = item.split("=", 1)
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = _cast(node[leaf], value, key)


def _cast(old, value: str, key: str):
    """`value` as the type of `old`: booleans from true/false/1/0 (any case), tuples and
    lists as Python literals; anything else is one ValueError naming the key."""
    try:
        if isinstance(old, bool):
            word = {"true": True, "1": True, "false": False, "0": False}.get(value.lower())
            if word is None:
                raise ValueError("not true or false")
            return word
        if isinstance(old, (tuple, list)):
            parsed = ast.literal_eval(value)
            return type(old)(parsed if isinstance(parsed, (tuple, list)) else (parsed,))
        return type(old)(value)
    except (ValueError, SyntaxError) as e:
        raise ValueError(f"{key}={value!r}: cannot be a {type(old).__name__} ({e})") from None


def time_train_step(config, local_batch, steps: int, warmup: int):
    """The sharded train_step of `config` (as genjax.train assembles it) compiled ahead on
    `local_batch`, then `steps` timed steps after `warmup`: a dict of figures."""
    from genjax import assemble, flops, sharding
    mesh = sharding.make_mesh(config.mesh)
    parts = assemble.assemble(config, mesh)
    state = parts.init_state()
    batch = assemble.shard_batch(parts, local_batch)

    t0 = time.perf_counter()
    compiled = parts.train_step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    # One step in flight, as genjax.train keeps it: hundreds of queued steps of a
    # multi-device XLA:CPU program can deadlock its collectives' rendezvous.
    for _ in range(warmup):
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
    dt = (time.perf_counter() - t0) / steps
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state.params))
    xla_flops = flops.compiled_flops(compiled)
    return {"params": n_params, "batch_size": config.batch_size,
            "compute_dtype": config.compute_dtype, "devices": jax.device_count(),
            "device_kind": jax.devices()[0].device_kind, "step_ms": 1000 * dt,
            "xla_flops_per_step": xla_flops,
            "xla_tflops_per_s": xla_flops / dt / 1e12 if xla_flops else None,
            "compile_s": compile_s, "final_loss": float(metrics["loss"]),
            "jax": jax.__version__, "python": platform.python_version()}


def run(preset: str, batch_size: int | None, steps: int, warmup: int, overrides: list[str]):
    from configs import lm_shakespeare
    from genjax import flops
    from genjax.families import lm

    config = lm_shakespeare.get_config(preset)
    config.unlock()
    if batch_size:
        config.batch_size = batch_size
    offline_config.fill_data_keys(config)
    config.total_steps = max(config.total_steps, steps + warmup)
    apply_overrides(config, overrides)
    config.lock()

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, config.model.vocab_size,
                          (config.batch_size, config.model.max_len + 1), dtype=np.int32)
    r = time_train_step(config, {"tokens": tokens}, steps, warmup)
    dt = r["step_ms"] / 1000
    tokens_per_step = config.batch_size * config.model.max_len
    flops_per_step = lm.flops_per_example(config) * config.batch_size
    peak = flops.peak_flops_per_device(config.peak_flops_per_device)
    return {"preset": preset, **r, "seq_len": config.model.max_len,
            "tokens_per_s": tokens_per_step / dt,
            "model_tflops_per_s": flops_per_step / dt / 1e12,
            "mfu": (flops_per_step / dt / (peak * r["devices"])) if peak else None}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", default="lm_throughput.json")
    p.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    args = p.parse_args(argv)
    r = run(args.preset, args.batch_size, args.steps, args.warmup, args.set)
    rows = [("preset", r["preset"]), ("params", f"{r['params']:,}"),
            ("batch x seq", f"{r['batch_size']} x {r['seq_len']}"),
            ("dtype", r["compute_dtype"]), ("device", f"{r['devices']} x {r['device_kind']}"),
            ("step", f"{r['step_ms']:.1f} ms"), ("tokens/s", f"{r['tokens_per_s']:,.0f}"),
            ("model TFLOP/s", f"{r['model_tflops_per_s']:.2f}"),
            ("MFU", "n/a (unknown peak)" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"),
            ("compile", f"{r['compile_s']:.1f} s")]
    report.print_rows(rows)
    cores = os.cpu_count() or 1
    if r["device_kind"] == "cpu" and r["devices"] == 1 and cores > 1:
        print(f"note: 1 CPU device on {cores} cores; `make run` trains with one per core "
              f"(XLA_FLAGS=--xla_force_host_platform_device_count={cores})")
    report.write_json(r, args.out)


if __name__ == "__main__":
    sys.exit(main())
