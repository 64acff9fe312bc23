"""W/eval/report.json and report.md from evaluator results (genjax/evaluators/__init__.py).

report.md: a header naming the run, one table `metric | value | real-vs-real floor` over
every evaluator (metric = <evaluator>/<key>), each evaluator's own markdown and figures,
then the run's plots. Paths in both files are relative to the eval folder.
"""
from __future__ import annotations

import json
import math
import os


def fmt(value: float | None) -> str:
    """4 significant digits; thousands separators from 10,000; None -> an em dash."""
    if value is None:
        return "\u2014"
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1e4:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def metric_rows(results: dict[str, dict]) -> list[tuple[str, float, float | None]]:
    """(<evaluator>/<key>, value, floor or None) in evaluator then metric order."""
    return [(f"{name}/{key}", value, r["floors"].get(key))
            for name, r in results.items() for key, value in r["metrics"].items()]


def _rel(path: str, out_dir: str) -> str:
    return os.path.relpath(path, out_dir)


def _header(run: dict) -> list[str]:
    if "samples" in run:  # genjax.evaluate --samples
        what = f"{run['num_samples']} {run['kind']}" + (" with labels" if run.get("labels")
                                                         else "")
        return [f"# Evaluation: {run['samples']}", "",
                f"{what} from the file, scored with the evaluators and floors of "
                f"`{run.get('config')}` (family `{run.get('family')}`'s data), seed "
                f"{run.get('seed')}", ""]
    return [f"# Evaluation: {run.get('workdir', '')}", "",
            f"family `{run.get('family')}`, step {run.get('step')}, params `{run.get('which')}`"
            f", seed {run.get('seed')}", ""]


def markdown(run: dict, results: dict[str, dict], plots: list[str], out_dir: str) -> str:
    lines = _header(run)
    rows = metric_rows(results)
    if rows:
        lines += ["| metric | value | real-vs-real floor |", "|---|---:|---:|"]
        lines += [f"| {k} | {fmt(v)} | {fmt(f)} |" for k, v, f in rows]
        lines.append("")
    if run.get("skipped"):
        lines += ["Not applicable: " + "; ".join(
            f"{n} ({why})" for n, why in run["skipped"].items()), ""]
    for name, r in results.items():
        lines += [f"## {name}", "", f"_{r.get('seconds', 0.0):.1f} s_", ""]
        if r["markdown"]:
            lines += [r["markdown"].rstrip(), ""]
        for fig in r["figures"]:
            rel = _rel(fig, out_dir)
            lines += [f"![{os.path.basename(fig)}]({rel})", ""]
    if plots:
        lines += ["## Plots", ""]
        for p in plots:
            lines += [f"![{os.path.basename(p)}]({_rel(p, out_dir)})", ""]
    return "\n".join(lines)


def write_report(out_dir: str, run: dict, results: dict[str, dict],
                 plots: list[str]) -> tuple[str, str]:
    """Writes report.json and report.md into out_dir; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    payload = {"run": run,
               "evaluators": {name: {**r, "figures": [_rel(p, out_dir) for p in r["figures"]]}
                              for name, r in results.items()},
               "plots": [_rel(p, out_dir) for p in plots]}
    json_path = os.path.join(out_dir, "report.json")
    md_path = os.path.join(out_dir, "report.md")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, allow_nan=True)
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(markdown(run, results, plots, out_dir) + "\n")
    return json_path, md_path
