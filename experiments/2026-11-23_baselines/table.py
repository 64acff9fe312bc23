"""Markdown table of W/eval/report.json for each workdir given: run | metric | value | floor.

  python experiments/2026-11-23_baselines/table.py runs_cpu/* > baselines.md

Per-play and per-split rows of the likelihood evaluator other than `test/` are left out.
"""
import json
import os
import sys


def fmt(v):
    return "—" if v is None else f"{v:.4g}"


def rows(workdir: str):
    with open(os.path.join(workdir, "eval", "report.json")) as f:
        report = json.load(f)
    run = report["run"]
    for name, r in report["evaluators"].items():
        n = r.get("details", {}).get("num_samples")
        for key, value in r["metrics"].items():
            if name == "likelihood" and "/" in key and not key.startswith("test/"):
                continue
            yield (f"{os.path.basename(workdir.rstrip('/'))} ({run['family']}, step "
                   f"{run['step']})", f"{name}/{key}", value, r["floors"].get(key), n)


def main(workdirs):
    print("| run | metric | value | real-vs-real floor | samples |")
    print("|---|---|---:|---:|---:|")
    for w in workdirs:
        if os.path.exists(os.path.join(w, "eval", "report.json")):
            for run, key, value, floor, n in rows(w):
                print(f"| {run} | {key} | {fmt(value)} | {fmt(floor)} | {n or ''} |")


if __name__ == "__main__":
    main(sys.argv[1:])
