r"""Sweep results -> one table per sweep (CSV, Markdown, LaTeX) and learning curves.

  python -m experiments.collect runs/sweeps
  python -m experiments.collect runs/ablations --metrics=loss,bits_per_char

Reads every <config>/<sweep>.sweep.json manifest under the root (experiments.sweep writes
them) and each run's W/metrics.jsonl and W/final_metrics.json. Per run: final and best
value of each eval metric (final = W/final_metrics.json, the whole split by default; best =
the best periodic eval, each over config.eval_batches, so one subset's noise can win: never
mixed with the final one, which only stands in for a run without periodic evals; lower is
better except for the names in HIGHER_IS_BETTER) and the last train loss.
Per swept setting: mean +- std (sample std, ddof=1) over the finished seeds, and n.
Writes next to the manifest:

  <sweep>.csv  <sweep>.runs.csv  <sweep>.md  <sweep>.tex (booktabs)  <sweep>.png (curves)

and prints the Markdown tables (best mean of each column in bold).
"""
from __future__ import annotations

import csv
import glob
import json
import math
import os
import sys

import numpy as np

from experiments.sweep import MANIFEST_SUFFIX
from genjax.errors import UserError
from genjax.sweep_lib import format_value
from genjax.metrics_writer import read_rows


# ---------------------------------------------------------------------- reading
def read_metrics(workdir: str) -> list[dict]:
    """metrics.jsonl rows by step; a step logged twice with the same keys (a resumed run)
    keeps its last row, rows of one step with other keys (the eval loss and an evaluator's
    row) are all kept."""
    rows: dict[tuple, dict] = {}
    for row in read_rows(os.path.join(workdir, "metrics.jsonl")):
        rows[(row["step"], tuple(sorted(row)))] = row
    return sorted(rows.values(), key=lambda r: r["step"])


HIGHER_IS_BETTER = ("acc", "psnr", "recall", "precision", "win_rate", "reward", "margin",
                    "word_share", "class_share", "conditional_prob", "distinct_", "coverage")


def higher_is_better(metric: str) -> bool:
    """Accuracies, precision/recall, win rates, rewards...: the larger the better; losses,
    bits, FIDs, near-copies and the rest: the smaller. The VAE's elbo and recon are
    log-likelihood bounds (higher); its *_bpd are their negatives in bits/dim (lower)."""
    if metric.endswith("_bpd"):
        return False
    leaf = metric.rsplit("/", 1)[-1]
    return (any(k in metric for k in HIGHER_IS_BETTER) or metric.endswith("is")
            or leaf in ("elbo", "recon"))


def read_json(path: str):
    """The JSON at `path`; UserError naming the file if it is not readable JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not readable JSON ({e})") from None


def run_record(manifest_dir: str, run: dict, metrics: list[str]) -> dict:
    workdir = os.path.join(manifest_dir, run["workdir"])
    rows = read_metrics(workdir)
    final = {}
    if os.path.exists(os.path.join(workdir, "final_metrics.json")):
        final = read_json(os.path.join(workdir, "final_metrics.json"))
    rec = {"name": run["name"], "overrides": run["overrides"], "seed": run["seed"],
           "workdir": workdir, "done": bool(final), "rows": rows,
           "steps": max((r["step"] for r in rows), default=0)}
    train = [r["loss"] for r in rows if "loss" in r]
    rec["train loss"] = train[-1] if train else math.nan
    for m in metrics:
        seen = [r[f"eval/{m}"] for r in rows if f"eval/{m}" in r]
        if not seen and m in final:  # a subset eval and the whole split's are not comparable
            seen.append(final[m])
        rec[f"final {m}"] = final.get(m, math.nan)
        pick = max if higher_is_better(m) else min
        finite = [v for v in seen if isinstance(v, (int, float)) and math.isfinite(v)]
        rec[f"best {m}"] = pick(finite) if finite else math.nan
    return rec


def load_sweeps(root: str) -> list[tuple[str, dict]]:
    paths = sorted(glob.glob(os.path.join(root, "**", "*" + MANIFEST_SUFFIX), recursive=True))
    out = []
    for path in paths:
        manifest = read_json(path)
        missing = [k for k in ("config", "sweep", "keys", "common", "runs")
                   if not isinstance(manifest, dict) or k not in manifest]
        if missing:
            raise UserError(f"{path}: not a sweep manifest (no {', '.join(missing)})")
        out.append((path, manifest))
    return out


# ---------------------------------------------------------------------- tables
def aggregate(records: list[dict], keys: list[str], columns: list[str]) -> list[dict]:
    """One row per swept setting (in sweep order): mean, std, n of each column over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        setting = tuple(format_value(rec["overrides"].get(k, "")) for k in keys)
        groups.setdefault(setting, []).append(rec)
    out = []
    for setting, recs in groups.items():
        done = [r for r in recs if r["done"]]
        row = {"setting": dict(zip(keys, setting)), "n": len(done), "runs": len(recs)}
        for c in columns:
            vals = np.array([r[c] for r in done if math.isfinite(r[c])], np.float64)
            row[c] = (float(vals.mean()) if len(vals) else math.nan,
                      float(vals.std(ddof=1)) if len(vals) > 1 else math.nan, len(vals))
        out.append(row)
    return out


def _cell(mean: float, std: float, digits: int = 4) -> str:
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f}" if not math.isfinite(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _best_rows(rows: list[dict], columns: list[str]) -> dict[str, int]:
    best = {}
    for c in columns:
        means = [(r[c][0], i) for i, r in enumerate(rows) if math.isfinite(r[c][0])]
        if len(means) > 1:
            metric = c.split(" ", 1)[-1]
            best[c] = (max if higher_is_better(metric) else min)(means)[1]
    return best


def markdown(rows: list[dict], keys: list[str], columns: list[str]) -> str:
    best = _best_rows(rows, columns)
    head = [*keys, *columns, "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(keys) +
                                                           ["---:"] * (len(columns) + 1)) + "|"]
    for i, r in enumerate(rows):
        cells = [r["setting"][k] for k in keys]
        for c in columns:
            cell = _cell(r[c][0], r[c][1])
            cells.append(f"**{cell}**" if best.get(c) == i else cell)
        cells.append(f"{r['n']}" if r["n"] == r["runs"] else f"{r['n']}/{r['runs']}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"),
                 ("#", r"\#"), ("$", r"\$")):
        s = s.replace(a, b)
    return s


def latex(rows: list[dict], keys: list[str], columns: list[str], caption: str) -> str:
    best = _best_rows(rows, columns)
    out = [f"% {caption}", "% needs \\usepackage{booktabs}",
           "\\begin{tabular}{" + "l" * len(keys) + "r" * (len(columns) + 1) + "}", "\\toprule",
           " & ".join(_tex(h) for h in [*keys, *columns, "n"]) + " \\\\", "\\midrule"]
    for i, r in enumerate(rows):
        cells = [_tex(r["setting"][k]) for k in keys]
        for c in columns:
            cell = _cell(r[c][0], r[c][1]).replace(" ± ", " $\\pm$ ")
            cells.append(f"\\textbf{{{cell}}}" if best.get(c) == i else cell)
        cells.append(str(r["n"]))
        out.append(" & ".join(cells) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(out) + "\n"


def write_csv(path: str, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


# ---------------------------------------------------------------------- curves
def plot_curves(path: str, records: list[dict], keys: list[str], metric: str, title: str) -> None:
    """Train loss and eval `metric` against step; one colour per swept setting."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    settings = []
    for rec in records:
        s = tuple(rec["overrides"].get(k) for k in keys)
        if s not in settings:
            settings.append(s)
    numeric = len(keys) == 1 and all(isinstance(s[0], (int, float)) and not isinstance(s[0], bool)
                                     for s in settings)
    if numeric:  # an ordered colour map for a numeric sweep (lr, dropout, ...)
        order = sorted(settings, key=lambda s: s[0])
        cmap = plt.get_cmap("viridis")
        colours = {s: cmap(i / max(len(order) - 1, 1)) for i, s in enumerate(order)}
    else:
        cmap = plt.get_cmap("tab10")
        colours = {s: cmap(i % 10) for i, s in enumerate(settings)}
    has_eval = any(rec["done"] or any(f"eval/{metric}" in r for r in rec["rows"])
                   for rec in records)
    fig, axes = plt.subplots(1, 2 if has_eval else 1, figsize=(11 if has_eval else 6, 4),
                             squeeze=False)
    labelled = set()
    for rec in records:
        s = tuple(rec["overrides"].get(k) for k in keys)
        label = ", ".join(f"{k}={format_value(v)}" for k, v in zip(keys, s)) or "base"
        kw = dict(color=colours[s], alpha=0.8, lw=1.2,
                  label=None if s in labelled else label)
        labelled.add(s)
        train = [(r["step"], r["loss"]) for r in rec["rows"] if "loss" in r]
        if train:
            axes[0, 0].plot(*zip(*train), **kw)
        if has_eval:
            ev = [(r["step"], r[f"eval/{metric}"]) for r in rec["rows"] if f"eval/{metric}" in r]
            final = os.path.join(rec["workdir"], "final_metrics.json")
            if rec["done"] and os.path.exists(final):
                value = read_json(final).get(metric)
                if value is not None:
                    ev.append((rec["steps"], value))
            if ev:
                axes[0, 1].plot(*zip(*sorted(set(ev))), marker="o", ms=3, **kw)
    axes[0, 0].set(xlabel="step", ylabel="train loss", title=title)
    if has_eval:
        axes[0, 1].set(xlabel="step", ylabel=f"eval {metric}")
    if any(rec["rows"] for rec in records):
        axes[0, 0].legend(fontsize=8)
    for ax in axes[0]:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------- CLI
def collect(root: str, metrics: list[str], only: str = "", plots: bool = True) -> list[dict]:
    """Writes the tables and plots of every sweep under `root`; returns what it wrote."""
    results = []
    for path, manifest in load_sweeps(root):
        if only and manifest["sweep"] != only:
            continue
        mdir = os.path.dirname(path)
        keys = list(manifest["keys"])
        records = [run_record(mdir, run, metrics) for run in manifest["runs"]]
        have = [m for m in metrics if any(math.isfinite(r[f"final {m}"]) or
                                          math.isfinite(r[f"best {m}"]) for r in records)]
        columns = [f"{kind} {m}" for m in have for kind in ("final", "best")] + ["train loss"]
        rows = aggregate(records, keys, columns)
        stem = os.path.join(mdir, manifest["sweep"])
        title = f"{manifest['config']} / {manifest['sweep']}"
        write_csv(stem + ".runs.csv", ["run", *keys, "seed", "done", "steps", *columns],
                  [[r["name"], *[format_value(r["overrides"].get(k, "")) for k in keys],
                    r["seed"], r["done"], r["steps"], *[r[c] for c in columns]]
                   for r in records])
        write_csv(stem + ".csv", [*keys, *[f"{c} {s}" for c in columns for s in ("mean", "std")],
                                  "n"],
                  [[r["setting"][k] for k in keys] +
                   [v for c in columns for v in r[c][:2]] + [r["n"]] for r in rows])
        md = markdown(rows, keys, columns)
        caption = (f"{title}: mean ± std over seeds ({sum(r['done'] for r in records)}"
                   f"/{len(records)} runs finished); common overrides {manifest['common'] or '{}'}")
        with open(stem + ".md", "w") as f:
            f.write(f"{caption}\n\n{md}\n")
        with open(stem + ".tex", "w") as f:
            f.write(latex(rows, keys, columns, caption))
        if plots:
            plot_curves(stem + ".png", records, keys, have[0] if have else "loss", title)
        print(f"## {title}\n\n{caption}\n\n{md}\n\n(wrote {stem}.{{csv,runs.csv,md,tex"
              f"{',png' if plots else ''}}})\n", flush=True)
        results.append({"manifest": path, "rows": rows, "records": records, "columns": columns})
    return results


def parse(argv: list[str]):
    """(flags, root) from the command line (absl flags on their own FlagValues, so tests
    can call main() in-process); bad input raises flags.Error."""
    from absl import flags
    fv = flags.FlagValues()
    flags.DEFINE_string("metrics", "loss", "comma-separated keys of final_metrics.json / "
                        "eval/ rows", flag_values=fv)
    flags.DEFINE_string("sweep", "", "only this sweep name", flag_values=fv)
    flags.DEFINE_bool("plots", True, "learning curves (<sweep>.png); --noplots: none",
                      flag_values=fv)
    flags.DEFINE_bool("no_plots", False, "same as --noplots", flag_values=fv)
    if {"-h", "--help", "--helpfull"} & set(argv):
        print(__doc__ + "\n" + fv.get_help())
        raise SystemExit(0)
    rest = fv(["collect", *argv])[1:]
    if len(rest) != 1:
        raise flags.Error(f"expected one ROOT (the --root of experiments.sweep), got {rest}")
    return fv, rest[0]


def main(argv=None) -> int:
    from absl import flags
    try:
        args, root = parse(sys.argv[1:] if argv is None else list(argv))
    except flags.Error as e:
        print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    if not os.path.isdir(root):
        print(f"error: no directory {root!r}", file=sys.stderr)
        return 2
    try:
        done = collect(root, [m for m in args.metrics.split(",") if m], args.sweep,
                       plots=args.plots and not args.no_plots)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not done:
        print(f"error: no *{MANIFEST_SUFFIX} under {root!r} (run experiments.sweep first)",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
