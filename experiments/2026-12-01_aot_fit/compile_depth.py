r"""Compile time against depth: the gpt2_124m width at 4 and 32 layers, scanned + remat +
chunked (the fit table's `all` knobs), on v5e:2x2 at 8 x 1024 per chip.

  nice python experiments/2026-12-01_aot_fit/compile_depth.py [--repeats=2]

Alternates 4, 32, 4, 32, ... (each a fresh `python -m genjax.aot` process, so nothing is
cached) and records XLA's compile wall time and CPU time (all threads; steadier than wall
time when other jobs share the cores). Writes compile_depth.json and prints the ratios.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
KNOBS = ["--config.model.remat=full", "--config.model.scan_layers=True",
         "--config.model.attention_impl=chunked", "--config.model.attention_chunk=512",
         "--config.model.loss_chunk=128"]


def compile_once(num_layers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "r.json")
        cmd = [sys.executable, "-m", "genjax.aot", "--config=configs/lm_shakespeare.py:gpt2_124m",
               "--topology=v5e:2x2", "--config.mesh.data=1", "--config.mesh.fsdp=-1",
               "--config.batch_size=32", f"--config.model.num_layers={num_layers}",
               f"--json={path}", *KNOBS]
        proc = subprocess.run(cmd, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                              capture_output=True, text=True)
        if proc.returncode:  # its own error line (e.g. libtpu missing), not a missing JSON
            sys.exit(f"genjax.aot with {num_layers} layers failed: "
                     f"{(proc.stderr.strip().splitlines() or ['exit %d' % proc.returncode])[-1]}")
        with open(path) as f:
            r = json.load(f)
    return {"num_layers": num_layers, "compile_s": r["compile_s"],
            "compile_cpu_s": r["compile_cpu_s"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    runs = []
    for _ in range(args.repeats):
        for L in (4, 32):
            runs.append(compile_once(L))
            print(runs[-1], flush=True)
            with open(os.path.join(HERE, "compile_depth.json"), "w") as f:
                json.dump(runs, f, indent=2)
    for key in ("compile_s", "compile_cpu_s"):
        mean = {L: sum(r[key] for r in runs if r["num_layers"] == L) /
                max(1, sum(r["num_layers"] == L for r in runs)) for L in (4, 32)}
        print(f"{key}: 4 layers {mean[4]:.1f}, 32 layers {mean[32]:.1f}, "
              f"ratio {mean[32] / mean[4]:.2f}")


if __name__ == "__main__":
    main()
