r"""Which LM sizes fit which TPU slices (FSDP over all chips), compiled ahead of time.

  python experiments/2026-11-23_aot_fit/fit_table.py     # from the repo root

Each row is one `python -m genjax.aot` run (libtpu, no TPU needed):
  --config=configs/lm_shakespeare.py:gpt2_124m --config.model.size=<size> --topology=<slice>
  --config.mesh.data=1 --config.mesh.fsdp=-1 --config.batch_size=<seqs per chip x chips>
(1024-token sequences, bfloat16 compute, AdamW, no rematerialisation). Rows already in
--out (default: results/ next to this file, jax 0.10.2 + libtpu 0.0.42.1) are reused;
delete them to recompile. Prints the Markdown table of the README (GiB per chip). On 2
CPU cores a row takes 1-12 minutes to compile.
"""
import argparse
import json
import os
import subprocess
import sys

ROWS = [  # size, slice, chips, sequences per chip
    ("gpt2_124m", "v5e:2x2", 4, 8), ("gpt2_124m", "v5e:4x4", 16, 8),
    ("gpt2_124m", "v5p:2x2x1", 4, 8), ("gpt2_1b", "v5e:2x2", 4, 8),
    ("gpt2_1b", "v5e:4x4", 16, 8), ("gpt2_1b", "v5e:4x4", 16, 2),
    ("gpt2_1b", "v5p:2x2x1", 4, 8),
]
GiB = 2 ** 30


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 "results"))
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    lines = ["| model | slice | batch (seq/chip) | params | AdamW state | activations + temps "
             "| peak | HBM | fits |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for size, topo, chips, per_chip in ROWS:
        path = os.path.join(args.out, f"{size}_{topo.replace(':', '_')}_b{per_chip}.json")
        if not os.path.exists(path):
            cmd = [sys.executable, "-m", "genjax.aot", "--config=configs/lm_shakespeare.py:gpt2_124m",
                   f"--config.model.size={size}", f"--topology={topo}", "--config.mesh.data=1",
                   "--config.mesh.fsdp=-1", f"--config.batch_size={per_chip * chips}",
                   f"--json={path}"]
            rc = subprocess.run(cmd, env=dict(os.environ, JAX_PLATFORMS="cpu")).returncode
            if rc not in (0, 1):
                sys.exit(f"genjax.aot failed ({rc}): {' '.join(cmd)}")
        with open(path) as f:
            r = json.load(f)
        at_least = "≥ " if "refused" in r else ""
        fits = f"yes ({100 * r['total'] / r['hbm']:.0f}%)" if r["fits"] else "**no**"
        lines.append(
            f"| {size} ({r['params_count'] / 1e6:,.0f}M) | {topo} | {per_chip * chips} ({per_chip}) "
            f"| {r['params'] / GiB:.2f} | {r['opt_state'] / GiB:.2f} "
            f"| {at_least}{r['temporaries'] / GiB:.2f} | {at_least}{r['total'] / GiB:.2f} "
            f"| {r['hbm'] / GiB:.0f} | {fits} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
