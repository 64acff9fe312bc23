r"""Where the LM train step's time goes on the CPU: the `cpu` preset's jitted, sharded
train_step (as genjax.train runs it) traced with the JAX profiler, the XLA:CPU thunks'
durations summed per kind (dots, fusions, all-reduce...) and per thunk, and the matmul
roofline: the thunks that run a dot (found in the compiled HLO), their time per device,
the GFLOP/s they reach on the model's matmul FLOPs, and the tokens/s of a step that
spent time on nothing else.

  XLA_FLAGS="--xla_force_host_platform_device_count=2 --xla_cpu_enable_xprof_traceme=true" \
      python -m experiments.bench.lm_step_profile --out=profile.json

Durations are summed over the devices (threads) and divided by the traced steps: with 2
devices a kind's ms/step is ~2x what one device spends on it. Tracing slows the step; the
untraced step time is measured first. `taskset -c 0` with one device and half the batch
times one device's share of the step alone on one core.
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

_NOT_THUNKS = ("ThunkExecutor", "$", "Pjit", "Common", "Wait", "Rendezvous", "ParseArguments",
               "end: ")
_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = .*?\b(dot|fusion|custom-call)\(")


def matmul_instructions(hlo_text: str) -> set[str]:
    """Names of the compiled HLO's instructions that run a matmul: `dot`s, and fusions
    whose called computation (transitively) holds one (XLA:CPU wraps its YNNPACK dots
    with their neighbouring elementwise ops in `ynn_fusion`s)."""
    callees: dict[str, list[str]] = collections.defaultdict(list)  # computation -> called
    with_dot: set[str] = set()                                      # computations
    calls_of: dict[str, str] = {}                                   # instruction -> callee
    dots: set[str] = set()
    comp = ""
    for line in hlo_text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):
            comp = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        name, op = m.groups()
        callee = re.search(r"calls=%([\w.\-]+)", line)
        if callee:
            callees[comp].append(callee.group(1))
            calls_of[name] = callee.group(1)
        if op == "dot":
            dots.add(name)
            with_dot.add(comp)

    def holds_dot(c: str, seen: frozenset = frozenset()) -> bool:
        return c in with_dot or any(holds_dot(x, seen | {c}) for x in callees[c]
                                    if x not in seen)

    return dots | {n for n, c in calls_of.items() if holds_dot(c)}


def profile(config, steps: int) -> dict:
    from genjax import assemble, sharding
    parts = assemble.assemble(config, sharding.make_mesh(config.mesh))
    state = parts.init_state()
    tokens = np.random.default_rng(0).integers(
        0, config.model.vocab_size, (config.batch_size, config.model.max_len + 1), np.int32)
    batch = assemble.shard_batch(parts, {"tokens": tokens})
    step = parts.train_step.lower(state, batch).compile()
    matmuls = matmul_instructions(step.as_text())

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
    devices = jax.device_count()
    matmul_ms = sum(ms for name, ms in per_thunk.items() if name in matmuls) / devices
    return {"step_ms": step_ms, "devices": devices, "matmul_thunks": len(matmuls),
            "matmul_ms_per_device": matmul_ms,
            "thunk_ms_per_device": sum(per_thunk.values()) / devices,
            "per_kind_ms": dict(per_kind.most_common()),
            "top_thunks_ms": dict(per_thunk.most_common(30))}


def roofline(config, r: dict) -> dict:
    """The matmul roofline of a profile `r`: model matmul FLOPs per device (6N per token
    plus attention, lm.flops_per_example) over the dot thunks' time."""
    from genjax.families import lm
    flops = lm.flops_per_example(config) * config.batch_size / r["devices"]
    tokens = config.batch_size * config.model.max_len
    return {"matmul_gflops_per_device": flops / r["matmul_ms_per_device"] / 1e6,
            "other_ms_per_device": r["step_ms"] - r["matmul_ms_per_device"],
            "tokens_per_s": tokens / r["step_ms"] * 1000,
            "matmul_only_tokens_per_s": tokens / r["matmul_ms_per_device"] * 1000}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--batch_size", type=int, default=0, help="0: the preset's")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", default="lm_step_profile.json")
    args = p.parse_args(argv)
    from configs import lm_shakespeare
    config = lm_shakespeare.get_config(args.preset)
    config.unlock()
    config.model.vocab_size = config.model.vocab_size or 128
    config.batch_size = args.batch_size or config.batch_size
    config.lock()
    r = profile(config, args.steps)
    r.update(roofline(config, r))
    print(f"step {r['step_ms']:.1f} ms untraced ({r['tokens_per_s']:,.0f} tokens/s), "
          f"{r['devices']} devices; traced thunk time per step, summed over devices:")
    for kind, ms in list(r["per_kind_ms"].items())[:15]:
        print(f"  {ms:7.2f} ms  {kind}")
    report.print_rows([
        ("matmul thunks, ms per device", f"{r['matmul_ms_per_device']:.2f}"),
        ("their model GFLOP/s per device", f"{r['matmul_gflops_per_device']:.0f}"),
        ("step minus matmuls, ms", f"{r['other_ms_per_device']:.2f}"),
        ("tokens/s if only matmuls took time", f"{r['matmul_only_tokens_per_s']:,.0f}")])
    report.write_json({"preset": args.preset, "batch_size": config.batch_size, **r}, args.out)


if __name__ == "__main__":
    sys.exit(main())
