r"""Reward-vs-KL curve of DPO over its beta sweep: gold reward and win rate against KL to
the reference, on held-out prompts (the `alignment` evaluator of each run).

  python -m experiments.sweep --config=configs/dpo_shakespeare.py:cpu --sweep=beta \
      --root=runs/align_sweep --config.init_from=runs/lm_cpu \
      --config.data.preferences=runs/align/prefs
  python experiments/2026-12-01_align/reward_vs_kl.py --root=runs/align_sweep \
      --out=experiments/2026-12-01_align/reward_vs_kl [--num_prompts=256 --max_new_tokens=48]

Each finished run of the sweep is evaluated once (W/eval/report.json is reused when it
already holds the alignment evaluator with the same settings); writes OUT.json, OUT.md
(the table) and OUT.png. The defaults fit the `gpu` presets' context (256); the `cpu`
presets' (64) keeps only prompts of <= 16 tokens at 48 new ones, and a `tiny` sweep needs a
shorter --max_new_tokens. An evaluation that fails stops the script with its line.
"""
import argparse
import glob
import json
import os
import subprocess
import sys



def _reported(path: str, settings: dict) -> dict | None:
    """The alignment metrics of an earlier report made with `settings`, else None."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        report = json.load(f)
    entry = report["evaluators"].get("alignment")
    used = report["run"].get("evals", {}).get("alignment", {})
    if entry is None or any(used.get(k) != v for k, v in settings.items()):
        return None
    return entry["metrics"]


def alignment_metrics(workdir: str, settings: dict) -> dict:
    path = os.path.join(workdir, "eval", "report.json")
    metrics = _reported(path, settings)
    if metrics is None:
        flags = [f"--set=alignment.{k}={v}" for k, v in settings.items()]
        run = subprocess.run([sys.executable, "-m", "genjax.evaluate", f"--workdir={workdir}",
                              "--only=alignment", *flags])
        if run.returncode:  # the evaluator printed its own one-line error
            sys.exit(f"reward_vs_kl: evaluating {workdir} failed (exit {run.returncode})")
        metrics = _reported(path, settings)
    return metrics


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--root", default="runs/align_sweep")
    p.add_argument("--out", default="experiments/2026-12-01_align/reward_vs_kl")
    p.add_argument("--num_prompts", type=int, default=256)
    p.add_argument("--max_new_tokens", type=int, default=48)
    a = p.parse_args()
    settings = {"num_prompts": a.num_prompts, "max_new_tokens": a.max_new_tokens}
    rows = []
    for final in sorted(glob.glob(os.path.join(a.root, "*", "dpo.beta=*", "seed=*",
                                               "final_metrics.json"))):
        workdir = os.path.dirname(final)
        beta = float(workdir.split("dpo.beta=")[1].split("/")[0])
        m = alignment_metrics(workdir, settings)
        rows.append({"beta": beta, "gold_reward": m["gold_reward"], "kl": m["kl"],
                     "win_rate": m["win_rate"], "distinct_2": m["distinct_2"],
                     "reference_gold_reward": m["reference_gold_reward"]})
    rows.sort(key=lambda r: r["beta"])
    with open(a.out + ".json", "w") as f:
        json.dump(rows, f, indent=2)
    md = ["| beta | KL (nats/sequence) | gold reward | win rate vs reference | distinct-2 |",
          "|---:|---:|---:|---:|---:|"]
    md += [f"| {r['beta']:g} | {r['kl']:.2f} | {r['gold_reward']:.3f} | {r['win_rate']:.3f} "
           f"| {r['distinct_2']:.3f} |" for r in rows]
    with open(a.out + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["kl"] for r in rows], [r["gold_reward"] for r in rows], "o-", label="DPO")
    for r in rows:
        ax.annotate(f"beta {r['beta']:g}", (r["kl"], r["gold_reward"]), fontsize=8,
                    xytext=(4, -10), textcoords="offset points")
    if rows:
        ax.axhline(rows[0]["reference_gold_reward"], color="gray", ls="--", label="reference")
    ax.set_xlabel(f"KL(policy || reference), nats per {a.max_new_tokens}-token completion")
    ax.set_ylabel("gold reward (held-out prompts)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out + ".png", dpi=120)
    print(f"wrote {a.out}.json, .md, .png")


if __name__ == "__main__":
    main()
