"""What the fine-tuning demos share: run genjax.train as a subprocess, count a run's
trainable parameters and optimizer bytes, print a markdown table."""
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def train(config: str, workdir: str, source: str, args: list[str]) -> float:
    """`python -m genjax.train --config=CONFIG --workdir --config.init_from=SOURCE ARGS`
    from the repository root (an ordinary run: it resumes); returns its seconds. WORKDIR and
    SOURCE are the caller's paths (made absolute: the run starts in ROOT, the caller then
    reads WORKDIR from where it is)."""
    t0 = time.time()
    workdir, source = os.path.abspath(workdir), os.path.abspath(source)
    subprocess.run([sys.executable, "-m", "genjax.train", f"--config={config}",
                    f"--workdir={workdir}", f"--config.init_from={source}", *args],
                   cwd=ROOT, check=True)
    return time.time() - t0


def state_sizes(workdir: str) -> dict:
    """Trainable and total parameter counts, the trainable share and the optimizer-state
    bytes of a run (from its config.json, without reading the checkpoint)."""
    import jax
    from genjax import assemble, config_lib, sharding
    with open(os.path.join(workdir, "config.json")) as f:
        config = config_lib.from_saved(json.load(f))
    config.lock()
    parts = assemble.assemble(config, sharding.make_mesh(config.mesh))
    count = lambda t: sum(x.size for x in jax.tree_util.tree_leaves(t))  # noqa: E731
    nbytes = lambda t: sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(t))  # noqa
    a = parts.abstract_state
    total = count(a.params) + count(a.model_state)
    return {"trainable_params": count(a.params), "total_params": total,
            "trainable_share": count(a.params) / total, "optimizer_bytes": nbytes(a.opt_state)}


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table (first column left-aligned, the others right-aligned)."""
    lines = ["| " + " | ".join(header) + " |",
             "|---|" + "---:|" * (len(header) - 1)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"
