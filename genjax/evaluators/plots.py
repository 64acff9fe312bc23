"""Report plots (matplotlib, no pyplot state: `Figure` + savefig renders with Agg).

  loss_curves(W/metrics.jsonl, png)        train loss (and loss_*) with the eval values
  metrics_vs_step(W/metrics.jsonl, dir)    one PNG per group of eval metrics: the family's
                                           eval/<k>, and each evaluator's eval/<name>/<k>
  latest_sample_grid(W, dir)               copy of the newest W/samples/step_<N>.png
  precision_recall_bars(rows, png)         grouped bars, e.g. model vs real-vs-real floor

Every function returns the path(s) it wrote; nothing to plot -> None / [].
"""
from __future__ import annotations

import math
import os
import re
import shutil

from matplotlib.figure import Figure

from genjax.metrics_writer import read_rows

BOOKKEEPING = ("count", "tokens", "train_seconds")  # eval keys that are not metrics


def read_metrics(path: str) -> dict[str, dict[int, float]]:
    """metrics.jsonl -> {key: {step: value}}; a step logged twice (a resumed run) keeps its
    last value; non-numeric and non-finite values are dropped."""
    series: dict[str, dict[int, float]] = {}
    for row in read_rows(path):
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                series.setdefault(k, {})[row["step"]] = float(v)
    return series


def _xy(points: dict[int, float]) -> tuple[list[int], list[float]]:
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def _save(fig: Figure, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def loss_curves(metrics_path: str, path: str) -> str | None:
    """Train `loss` / `loss_*` against step, with the same keys under eval/ as markers."""
    series = read_metrics(metrics_path)
    train = sorted(k for k in series if k == "loss" or k.startswith("loss_"))
    if not train:
        return None
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for k in train:
        line, = ax.plot(*_xy(series[k]), label=f"train {k}", lw=1)
        if f"eval/{k}" in series:
            ax.plot(*_xy(series[f"eval/{k}"]), "o--", color=line.get_color(),
                    label=f"eval {k}", ms=4)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("loss curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def eval_groups(series: dict[str, dict[int, float]]) -> dict[str, list[str]]:
    """{"family": [eval/<k>...], "<evaluator>": [eval/<name>/<k>...]}, bookkeeping dropped."""
    groups: dict[str, list[str]] = {}
    for key in sorted(series):
        parts = key.split("/")
        if parts[0] != "eval" or parts[-1] in BOOKKEEPING:
            continue
        groups.setdefault("family" if len(parts) == 2 else parts[1], []).append(key)
    return groups


def metrics_vs_step(metrics_path: str, out_dir: str, max_panels: int = 12,
                    latest: dict[str, dict[int, float]] | None = None) -> list[str]:
    """One PNG of small multiples per group (`eval_groups`): metrics_<group>.png.
    `latest` ({key: {step: value}}, e.g. this evaluation's results) extends the series
    that metrics.jsonl already has."""
    written = []
    series = read_metrics(metrics_path)
    for key, points in (latest or {}).items():
        if key in series:
            series[key].update(points)
    for group, keys in eval_groups(series).items():
        keys = keys[:max_panels]
        ncol = min(3, len(keys))
        nrow = math.ceil(len(keys) / ncol)
        fig = Figure(figsize=(4 * ncol, 2.8 * nrow), layout="constrained")
        axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
        for ax, key in zip(axes, keys):
            ax.plot(*_xy(series[key]), "o-", ms=3, lw=1)
            ax.set_title(key.split("/", 2 if group != "family" else 1)[-1], fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.grid(alpha=0.3)
        for ax in axes[len(keys):]:
            ax.set_visible(False)
        fig.suptitle(f"eval metrics vs step: {group}")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", group)
        written.append(_save(fig, os.path.join(out_dir, f"metrics_{name}.png")))
    return written


def latest_sample_grid(workdir: str, out_dir: str) -> str | None:
    """Copies the newest W/samples/step_<N>.png (written by genjax.train) into out_dir."""
    folder = os.path.join(workdir, "samples")
    steps = []
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            m = re.fullmatch(r"step_(\d+)\.png", name)
            if m:
                steps.append(int(m.group(1)))
    if not steps:
        return None
    os.makedirs(out_dir, exist_ok=True)
    dst = os.path.join(out_dir, f"samples_step_{max(steps)}.png")
    shutil.copyfile(os.path.join(folder, f"step_{max(steps)}.png"), dst)
    return dst


def precision_recall_bars(rows: dict[str, dict[str, float]], path: str, *,
                          title: str = "precision / recall") -> str:
    """Grouped bars in [0, 1]: one group per metric ("precision", "recall", ...), one bar
    per row, e.g. rows={"model": {"precision": .6, "recall": .4},
                        "real vs real": {"precision": .9, "recall": .9}}."""
    if not rows:
        raise ValueError("precision_recall_bars: no rows")
    metrics = list(dict.fromkeys(k for r in rows.values() for k in r))
    width = 0.8 / len(rows)
    fig = Figure(figsize=(1.8 + 1.6 * len(metrics), 3.5), layout="constrained")
    ax = fig.subplots()
    for i, (label, values) in enumerate(rows.items()):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(metrics))]
        ys = [values.get(m, float("nan")) for m in metrics]
        bars = ax.bar(xs, ys, width, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set_ylim(0, 1.1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)
