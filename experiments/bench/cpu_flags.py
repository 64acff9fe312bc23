r"""LM training throughput on the CPU under XLA:CPU flag sets: which backend options make
the `cpu` preset's train step fastest here, and whether they change its numbers.

  python -m experiments.bench.cpu_flags --out=experiments/bench/results/cpu_flags.json

Each flag set runs `experiments.bench.lm_throughput` in its own process (XLA reads its
flags once per process), with the devices of `--devices` (fake host devices, data
parallel). Prints a table (tokens/s, step ms, compile s, the loss after the timed steps,
which shows whether the flags change the arithmetic) and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from experiments.bench import report

FLAG_SETS = {
    "default": "",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "no_ynn_dots": "--xla_cpu_experimental_ynn_fusion_type=",
    "onednn": "--xla_cpu_use_onednn=true",
    "no_thunks": "--xla_cpu_use_thunk_runtime=false",
    "eigen_1thread": "--xla_cpu_multi_thread_eigen=false",
    "concurrency_sched": "--xla_cpu_enable_concurrency_optimized_scheduler=true",
}


def run_one(name: str, flags: str, devices: int, args) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {flags}".strip())
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        cmd = [sys.executable, "-m", "experiments.bench.lm_throughput", f"--preset={args.preset}",
               f"--batch_size={args.batch_size}", f"--steps={args.steps}",
               f"--warmup={args.warmup}", f"--out={out}"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            return {"name": name, "flags": flags, "devices": devices, "error": tail[0][:200]}
        with open(out) as f:
            r = json.load(f)
    return {"name": name, "flags": flags, "devices": devices, **r}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--batch_size", type=int, default=12)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--devices", default="2,1", help="comma-separated device counts")
    p.add_argument("--only", default="", help="comma-separated flag-set names")
    p.add_argument("--out", default="cpu_flags.json")
    args = p.parse_args(argv)
    names = [n for n in FLAG_SETS if not args.only or n in args.only.split(",")]
    rows = []
    for devices in (int(d) for d in args.devices.split(",")):
        for name in names:
            r = run_one(name, FLAG_SETS[name], devices, args)
            rows.append(r)
            if "error" in r:
                print(f"{name:<18} {devices} dev | error: {r['error']}", flush=True)
            else:
                print(f"{name:<18} {devices} dev | {r['tokens_per_s']:>8,.0f} tokens/s | "
                      f"{r['step_ms']:6.1f} ms/step | compile {r['compile_s']:5.1f} s | "
                      f"loss {r['final_loss']:.6f}", flush=True)
    report.write_json({"preset": args.preset, "batch_size": args.batch_size,
                       "steps": args.steps, "rows": rows}, args.out)


if __name__ == "__main__":
    sys.exit(main())
