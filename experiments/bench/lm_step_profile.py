r"""Where the LM train step's time goes on the CPU: the `cpu` preset's jitted, sharded
train_step (as genjax.train runs it) traced with the JAX profiler, the XLA:CPU thunks'
durations summed per kind (dots, fusions, all-reduce...) and per thunk.

  XLA_FLAGS="--xla_force_host_platform_device_count=2 --xla_cpu_enable_xprof_traceme=true" \
      python -m experiments.bench.lm_step_profile --out=profile.json

Durations are summed over the devices (threads) and divided by the traced steps: with 2
devices a kind's ms/step is ~2x what one device spends on it. Tracing slows the step; the
untraced step time is measured first.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

import jax
import numpy as np

from experiments.bench import report

_NOT_THUNKS = ("ThunkExecutor", "$", "Pjit", "Common", "Wait", "Rendezvous", "ParseArguments")


def profile(config, steps: int) -> dict:
    from genjax import assemble, sharding
    parts = assemble.assemble(config, sharding.make_mesh(config.mesh))
    state = parts.init_state()
    tokens = np.random.default_rng(0).integers(
        0, config.model.vocab_size, (config.batch_size, config.model.max_len + 1), np.int32)
    batch = assemble.shard_batch(parts, {"tokens": tokens})
    step = parts.train_step.lower(state, batch).compile()

    def run(n):
        nonlocal state
        for _ in range(n):
            state, metrics = step(state, batch)
            jax.block_until_ready(metrics)

    run(5)
    t0 = time.perf_counter()
    run(steps)
    step_ms = (time.perf_counter() - t0) / steps * 1000
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp, create_perfetto_trace=True)
        run(steps)
        jax.profiler.stop_trace()
        trace = sorted(glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True))
        events = json.load(gzip.open(trace[-1]))["traceEvents"]
    per_thunk = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(_NOT_THUNKS):
            per_thunk[e["name"]] += e.get("dur", 0) / 1000 / steps
    per_kind = collections.Counter()
    for name, ms in per_thunk.items():
        per_kind[re.sub(r"[._]\d+$", "", name)] += ms
    return {"step_ms": step_ms, "devices": jax.device_count(),
            "per_kind_ms": dict(per_kind.most_common()),
            "top_thunks_ms": dict(per_thunk.most_common(30))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", default="lm_step_profile.json")
    args = p.parse_args(argv)
    from configs import lm_shakespeare
    config = lm_shakespeare.get_config(args.preset)
    config.unlock()
    config.model.vocab_size = config.model.vocab_size or 128
    config.lock()
    r = profile(config, args.steps)
    print(f"step {r['step_ms']:.1f} ms untraced, {r['devices']} devices; traced thunk time "
          "per step, summed over devices:")
    for kind, ms in list(r["per_kind_ms"].items())[:15]:
        print(f"  {ms:7.2f} ms  {kind}")
    report.write_json({"preset": args.preset, **r}, args.out)


if __name__ == "__main__":
    sys.exit(main())
