r"""Which LM presets fit which TPU slices with the scale knobs, compiled ahead of time.

  nice python experiments/2026-12-01_aot_fit/fit_table.py            # all rows
  nice python experiments/2026-12-01_aot_fit/fit_table.py --only=gpt2_124m-v5e:2x2-all

Each row is one `python -m genjax.aot` run (libtpu, no TPU needed; here jax 0.10.2 +
libtpu 0.0.52) of configs/lm_shakespeare.py:<preset> with FSDP over all chips
(--config.mesh.data=1 --config.mesh.fsdp=-1), <seqs per chip> x chips sequences, and
one knob set:
  plain   no remat, Python loop over layers, XLA attention, whole-batch float32 logits
  remat   model.remat=full + model.scan_layers=True
  all     remat + model.attention_impl=chunked (512-query blocks) + model.loss_chunk=128
Rows already in results/ are reused (delete a JSON to recompile); after every row the
table (table.md) and all rows (results.json) are rewritten, so a partial run leaves a
partial table. compile_s: XLA's TPU compile on this 2-core CPU (busy: other jobs ran).
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
KNOBS = {
    "plain": [],
    "remat": ["--config.model.remat=full", "--config.model.scan_layers=True"],
    "all": ["--config.model.remat=full", "--config.model.scan_layers=True",
            "--config.model.attention_impl=chunked", "--config.model.attention_chunk=512",
            "--config.model.loss_chunk=128"],
}
# (preset, slice, chips, sequences per chip, knobs, extra overrides); order = priority.
ROWS = [
    ("gpt2_124m", "v5e:2x2", 4, 8, "all", ()),
    ("gpt2_1b", "v5e:4x4", 16, 8, "all", ()),
    ("llama_7b", "v5p:2x2x1", 4, 4, "all", ()),
    ("gpt2_124m", "v5e:2x2", 4, 8, "all", ("model.num_layers=4",)),
    ("gpt2_124m", "v5e:2x2", 4, 8, "all", ("model.num_layers=32",)),
    ("gpt2_124m", "v5e:2x2", 4, 8, "plain", ()),
    ("gpt2_124m", "v5e:2x2", 4, 8, "remat", ()),
    ("gpt2_1b", "v5e:2x2", 4, 8, "all", ()),
    ("gpt2_124m", "v6e:2x2", 4, 8, "all", ()),
    ("llama_1b", "v5p:2x2x1", 4, 8, "all", ()),
    ("llama_7b", "v5p:2x2x1", 4, 8, "all", ()),
    # compile time against depth: unscanned for contrast, and the scanned pair measured
    # again in the opposite order (seed=1 compiles the same program; load varies here)
    ("gpt2_124m", "v5e:2x2", 4, 8, "plain", ("model.num_layers=4",)),
    ("gpt2_124m", "v5e:2x2", 4, 8, "plain", ("model.num_layers=32",)),
    ("gpt2_124m", "v5e:2x2", 4, 8, "all", ("model.num_layers=32", "seed=1")),
    ("gpt2_124m", "v5e:2x2", 4, 8, "all", ("model.num_layers=4", "seed=1")),
]
GiB = 2 ** 30


def row_name(preset, topo, per_chip, knobs, extra) -> str:
    tail = "".join(f"-{e.split('.')[-1].replace('=', '')}" for e in extra)  # -num_layers4
    return f"{preset}{tail}-{topo}-b{per_chip}-{knobs}"


def run_row(path, preset, topo, chips, per_chip, knobs, extra) -> None:
    cmd = [sys.executable, "-m", "genjax.aot", f"--config=configs/lm_shakespeare.py:{preset}",
           f"--topology={topo}", "--config.mesh.data=1", "--config.mesh.fsdp=-1",
           f"--config.batch_size={per_chip * chips}", f"--json={path}", *KNOBS[knobs],
           *[f"--config.{e}" for e in extra]]
    print("$", " ".join(cmd[1:]), flush=True)
    t0 = time.time()
    rc = subprocess.run(cmd, env=dict(os.environ, JAX_PLATFORMS="cpu")).returncode
    if rc not in (0, 1) or not os.path.exists(path):
        print(f"genjax.aot failed ({rc})", flush=True)
        return
    with open(path) as f:
        r = json.load(f)
    r.update(wall_s=time.time() - t0, preset=preset, knobs=knobs, extra=list(extra),
             seqs_per_chip=per_chip)
    with open(path, "w") as f:
        json.dump(r, f, indent=2)


def table(rows) -> str:
    lines = ["| model | slice | seq/chip x len | knobs | params | AdamW | activations + temps "
             "| peak | HBM | fits | compile s |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        at_least = "≥ " if "refused" in r else ""
        fits = f"yes ({100 * r['total'] / r['hbm']:.0f}%)" if r["fits"] else "**no**"
        extra = "".join(f" {e}" for e in r["extra"])
        lines.append(
            f"| {r['preset']}{extra} ({r['params_count'] / 1e6:,.0f}M) | {r['topology']} "
            f"| {r['seqs_per_chip']} x {r['seq_len']} | {r['knobs']} | {r['params'] / GiB:.2f} "
            f"| {r['opt_state'] / GiB:.2f} | {at_least}{r['temporaries'] / GiB:.2f} "
            f"| {at_least}{r['total'] / GiB:.2f} | {r['hbm'] / GiB:.0f} | {fits} "
            f"| {r['compile_s']:.0f} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated row names (default: all)")
    args = p.parse_args()
    only = set(filter(None, args.only.split(",")))
    out = os.path.join(HERE, "results")
    os.makedirs(out, exist_ok=True)
    done = []
    for preset, topo, chips, per_chip, knobs, extra in ROWS:
        name = row_name(preset, topo, per_chip, knobs, extra)
        path = os.path.join(out, name.replace(":", "_") + ".json")
        if only and name not in only and not os.path.exists(path):
            continue
        if not os.path.exists(path):
            run_row(path, preset, topo, chips, per_chip, knobs, extra)
        if os.path.exists(path):
            with open(path) as f:
                r = json.load(f)
            r["name"] = name
            r["seq_len"] = 2048 if preset.startswith("llama") else 1024
            done.append(r)
        with open(os.path.join(HERE, "results.json"), "w") as f:
            json.dump(done, f, indent=2)
        with open(os.path.join(HERE, "table.md"), "w") as f:
            f.write(table(done) + "\n")
    print(table(done))


if __name__ == "__main__":
    main()
