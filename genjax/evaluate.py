r"""Evaluate a trained run, or samples from anywhere: evaluators (genjax/evaluators/), a report.

  python -m genjax.evaluate --workdir=runs/lm_cpu
  python -m genjax.evaluate --workdir=runs/lm_cpu --params=raw --only=likelihood,text \
      --num_samples=64
  python -m genjax.evaluate --samples=peer.npz [--config=configs/diffusion_fmnist.py:cpu]
  python -m genjax.evaluate --samples=peer.jsonl --out=DIR   # or .txt

--samples scores a file of samples made by any code (formats:
genjax/evaluators/sample_files.py) with the same evaluators and floors as a run: those of
--config's `config.evals` that can score the file (default config by file type: images ->
configs/diffusion_fmnist.py:cpu, text -> configs/lm_shakespeare.py:cpu); the others are
listed with the reason. num_samples = the file's count (--num_samples: its first N).
Report into --out (default <FILE>.eval/); a bad file -> one line, exit 2, nothing written.

Runs every evaluator in the run's `config.evals` that applies to its family (or those
--only names), on the latest checkpoint's EMA params (raw without EMA), and writes into
W/eval/: report.json, report.md (metric | value | real-vs-real floor, then each
evaluator's section) and PNGs: loss curves and eval metrics vs step (W/metrics.jsonl),
the latest sample grid (W/samples/), precision/recall bars where an evaluator reports
both. --num_samples overrides every evaluator's `num_samples` setting; --set=<name>.<key>=<value>
(repeatable) any one setting, e.g. --set=cas.total_steps=1500 (the run's config keeps its own).
Bad input (no workdir, unknown or inapplicable evaluator) -> one line, exit code 2.
"""
from __future__ import annotations

import os

import jax

from genjax import cli, config_lib, families, inference, runtime
from genjax import evaluators as ev
from genjax import train as train_lib
from genjax.errors import UserError
from genjax.evaluators import plots, report, sample_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = {"images": "configs/diffusion_fmnist.py:cpu",  # --samples, by file type
                   "text": "configs/lm_shakespeare.py:cpu"}


def report_plots(workdir: str, out_dir: str, results: dict[str, dict], step: int) -> list[str]:
    """The run's plots: loss curves, metrics vs step (with these `results` at `step`), the
    latest sample grid, precision/recall bars."""
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    out = [plots.loss_curves(metrics_path, os.path.join(out_dir, "loss_curves.png"))]
    latest = {f"eval/{name}/{k}": {step: v} for name, r in results.items()
              for k, v in r["metrics"].items()}
    out += plots.metrics_vs_step(metrics_path, out_dir, latest=latest)
    out.append(plots.latest_sample_grid(workdir, out_dir))
    return [p for p in out + pair_plots(out_dir, results) if p]


def pair_plots(out_dir: str, results: dict[str, dict]) -> list[str]:
    """Precision/recall bars (model vs real-vs-real floor) for every evaluator that reports
    both and did not draw its own."""
    out = []
    for name, r in results.items():
        if any("precision" in os.path.basename(f) for f in r["figures"]):
            continue  # the evaluator drew its own
        for key in r["metrics"]:
            prefix = key[:-len("precision")]
            if not key.endswith("precision") or prefix + "recall" not in r["metrics"]:
                continue
            pair = ("precision", "recall")
            rows = {"model": {m: r["metrics"][prefix + m] for m in pair}}
            if all(prefix + m in r["floors"] for m in pair):
                rows["real vs real"] = {m: r["floors"][prefix + m] for m in pair}
            tag = f"{name}_{prefix.strip('/_')}".strip("_")
            out.append(plots.precision_recall_bars(
                rows, os.path.join(out_dir, f"precision_recall_{tag}.png"),
                title=f"{name}: {prefix}precision / recall"))
    return out


def apply_settings(evals, assignments) -> None:
    """`<name>.<key>=<value>` strings into config.evals (value: a Python literal, else a
    string); UserError for an unknown evaluator or key, or a value of the wrong type."""
    import ast
    for item in assignments or []:
        target, sep, raw = item.partition("=")
        name, dot, key = target.partition(".")
        if not (sep and dot and name and key):
            raise UserError(f"--set={item!r}: use <evaluator>.<key>=<value>")
        if name not in evals:
            raise UserError(f"--set={item!r}: evaluator {name!r} is not configured in this run "
                            f"(configured: {list(evals.keys())})")
        if key not in evals[name]:
            raise UserError(f"--set={item!r}: {name} has no setting {key!r}; settings: "
                            f"{sorted(evals[name].keys())}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        try:
            evals[name][key] = value
        except TypeError as e:
            raise UserError(f"--set={item!r}: {e}") from None


def evaluate_workdir(workdir: str, *, which: str = "ema", only: list[str] | None = None,
                     num_samples: int = 0, seed: int = 0,
                     settings: list[str] | None = None) -> dict:
    """Runs the evaluators and writes the report; returns {"results", "report_md",
    "report_json", "plots"}."""
    if not os.path.isdir(workdir):
        raise UserError(f"--workdir={workdir!r} does not exist")
    for name in only or []:
        ev.get(name)  # a typo fails before the model is loaded
    loaded = inference.load(workdir, which=which)
    names = ev.resolve(loaded.config, loaded.family, only)
    skipped = {} if only else ev.skipped(loaded.config, loaded.family)
    for name, why in skipped.items():
        print(f"skipping evaluator {name}: {why}", flush=True)
    if not names:
        raise UserError(f"no evaluator to run: the run's config.evals has "
                        f"{ev.configured(loaded.config)} and none applies "
                        f"({'; '.join(f'{n}: {w}' for n, w in skipped.items())})")
    if num_samples:
        for name in names:
            if "num_samples" in loaded.config.evals[name]:
                loaded.config.evals[name].num_samples = int(num_samples)
    apply_settings(loaded.config.evals, settings)
    ev.check_settings(loaded.config.evals, names)
    ctx = ev.from_loaded(loaded, os.path.abspath(workdir), seed=seed, train_fn=train_lib.train)
    results = ctx.run(names)
    out = {"results": results, "skipped": skipped}
    if jax.process_index() == 0:
        figures = report_plots(ctx.workdir, ctx.out_dir, results, ctx.step)
        run = {"workdir": ctx.workdir, "family": loaded.config.family, "step": ctx.step,
               "which": ctx.which, "seed": seed, "genjax_version": runtime.version(),
               "evals": config_lib.to_dict(loaded.config.evals), "skipped": skipped}
        out["report_json"], out["report_md"] = report.write_report(ctx.out_dir, run, results,
                                                                   figures)
        out["plots"] = figures
    return out


def evaluate_samples(path: str, *, config=None, config_spec: str = "--config",
                     only: list[str] | None = None, out_dir: str = "", num_samples: int = 0,
                     seed: int = 0, settings: list[str] | None = None) -> dict:
    """Scores the samples in file `path` (module docstring) and writes the report; returns
    {"results", "skipped", "report_md", "report_json", "plots"}. Everything is checked
    before anything is written."""
    samples = sample_files.read(path)
    spec = config_spec  # what the report names as the evaluators' config
    if config is None:
        spec = DEFAULT_CONFIGS[samples.kind]
        config = config_lib.load_file(os.path.join(ROOT, spec))
    for name in only or []:
        ev.get(name)
    names, skipped = ev.resolve_given(config, samples.has, only)
    if not names:
        raise UserError(f"no evaluator of {spec} scores {samples.kind}: "
                        f"{'; '.join(f'{n}: {w}' for n, w in skipped.items())}")
    for name, why in skipped.items():
        print(f"skipping evaluator {name}: {why}", flush=True)
    if num_samples > len(samples):
        raise UserError(f"--num_samples={num_samples}: {path} has {len(samples)} samples")
    for name in names:
        if "num_samples" in config.evals[name]:
            config.evals[name].num_samples = int(num_samples) or len(samples)
    apply_settings(config.evals, settings)
    ev.check_settings(config.evals, names, available=len(samples))
    data = families.get(config.family).make_data(
        config, process_index=jax.process_index(), process_count=jax.process_count())
    samples = sample_files.for_data(samples, data)
    out_dir = os.path.abspath(out_dir or f"{path}.eval")
    ctx = ev.for_samples(config, samples, data, out_dir, seed=seed, train_fn=train_lib.train)
    results = ctx.run(names)
    out = {"results": results, "skipped": skipped}
    if jax.process_index() == 0:
        figures = [p for p in pair_plots(out_dir, results) if p]
        run = {"samples": os.path.abspath(path), "kind": samples.kind,
               "num_samples": len(samples), "labels": "labels" in samples.has,
               "config": spec, "family": config.family, "seed": seed,
               "genjax_version": runtime.version(), "evals": config_lib.to_dict(config.evals),
               "skipped": skipped}
        out["report_json"], out["report_md"] = report.write_report(out_dir, run, results,
                                                                   figures)
        out["plots"] = figures
    return out


# ---------------------------------------------------------------------- CLI
def main(argv) -> None:
    from absl import flags
    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {argv[1:]}")
    runtime.setup_logging()
    only = [n.strip() for n in FLAGS.only.split(",") if n.strip()] or None
    if FLAGS.num_samples < 0:
        raise UserError(f"--num_samples={FLAGS.num_samples}: must be >= 0 (0 = the settings')")
    if bool(FLAGS.workdir) == bool(FLAGS.samples):
        raise UserError("give one of --workdir (a run) or --samples (a file of samples)")
    if FLAGS.samples:
        if FLAGS["params"].present:
            raise UserError("--params goes with --workdir: a file of samples has no params")
        from ml_collections import config_flags
        spec = config_flags.get_config_filename(FLAGS["config"]) if FLAGS.config else ""
        out = evaluate_samples(FLAGS.samples, config=FLAGS.config, config_spec=spec or "--config",
                               only=only, out_dir=FLAGS.out,
                               num_samples=FLAGS.num_samples, seed=FLAGS.seed,
                               settings=FLAGS.set)
    else:
        if FLAGS.config is not None or FLAGS.out:
            raise UserError("--config and --out go with --samples; a run's report goes to "
                            "W/eval with the run's own config")
        out = evaluate_workdir(FLAGS.workdir, which=FLAGS.params, only=only,
                               num_samples=FLAGS.num_samples, seed=FLAGS.seed,
                               settings=FLAGS.set)
    if "report_md" in out:
        for key, value, floor in report.metric_rows(out["results"]):
            print(f"{key:40s} {report.fmt(value):>12s}   floor {report.fmt(floor)}")
        print(f"wrote {out['report_md']} and {out['report_json']}", flush=True)


def define_flags():
    from absl import flags
    from ml_collections import config_flags
    flags.DEFINE_string("workdir", None, "run directory (with checkpoints/)")
    flags.DEFINE_string("samples", None, "or a file of samples: .npz images, .txt/.jsonl text")
    config_flags.DEFINE_config_file("config", None, "--samples: configs/<name>.py[:preset] "
                                    "(default by file type)", lock_config=True)
    flags.DEFINE_string("out", "", "--samples: report folder (default <FILE>.eval)")
    flags.DEFINE_string("params", "ema", "ema | raw")
    flags.DEFINE_string("only", "", "comma-separated evaluator names (default: all configured)")
    flags.DEFINE_integer("num_samples", 0, "override every evaluator's num_samples (0 = keep)")
    flags.DEFINE_integer("seed", 0, "EvalContext.seed")
    flags.DEFINE_multi_string("set", [], "<evaluator>.<key>=<value>: one setting (repeatable)")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
