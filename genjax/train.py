r"""The one training loop, for every family.

  python -m genjax.train --config=configs/lm_shakespeare.py:cpu --workdir=runs/lm
  python -m genjax.train --config=configs/lm_shakespeare.py:tiny --workdir=W \
      --config.optim.lr=1e-3            # overrides; unknown keys are an error

Re-running the same command resumes from the workdir. Outputs in the workdir:
config.json, metrics.jsonl, tb/ (TensorBoard), checkpoints/, final_metrics.json.
SIGTERM -> a checkpoint at the next step boundary, then exit code 143 (EXIT_PREEMPTED).
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from typing import Any

import jax
import numpy as np

from genjax import assemble as assemble_lib
from genjax import checkpoint as ckpt_lib
from genjax import config_lib, faults, flops, optim, runtime, sharding
from genjax.config_lib import ConfigError, UserError
from genjax.metrics_writer import MetricsWriter, Progress
from genjax.rollback import BatchBook, NonFinite
from genjax.workdir import WorkdirLock, write_run_meta

EXIT_PREEMPTED = 143  # 128 + SIGTERM: schedulers (Slurm, k8s) read it as "requeue me"


class Preempted(SystemExit):
    def __init__(self):
        super().__init__(EXIT_PREEMPTED)


class _SigtermFlag:
    """Set by SIGTERM; the loop checks it at every step boundary."""

    def __init__(self):
        self.raised = False

    def install(self):
        def handler(signum, frame):
            logging.warning("SIGTERM: checkpointing at the next step boundary")
            self.raised = True
        try:
            signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread (e.g. inside a test runner thread)
            pass
        return self


def train(config, workdir: str, *, stop_after: int | None = None, data=None) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming if possible); returns the final eval metrics.

    `stop_after`: leave the loop after this many steps of *this* call (tests use it to
    simulate an interruption; the checkpoint of the last step is still written).
    `data`: use this data object instead of `family.make_data(config)` (same interface;
    e.g. genjax/data/array_data.py for generated images held in memory).
    """
    # ------------------------------------------------------------------ setup
    if config.deterministic:  # must precede backend initialisation
        runtime.request_deterministic_ops()
    if config.on_nan not in ("halt", "rollback"):
        raise ConfigError(f"config.on_nan={config.on_nan!r}: use halt | rollback")
    runtime.initialize_distributed(peer_timeout_s=int(config.peer_timeout_s))
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    is_main = jax.process_index() == 0
    family = config_lib_family(config)
    lock = WorkdirLock(workdir).acquire()
    try:
        return _train(config, workdir, family, is_main, stop_after, data)
    finally:
        lock.release()


def _train(config, workdir, family, is_main, stop_after, data=None):
    sigterm = _SigtermFlag().install()

    # ------------------------------------------------------------------ data
    # Loaded first: a missing dataset fails before anything is compiled.
    if data is None:
        data = family.make_data(config, process_index=jax.process_index(),
                                process_count=jax.process_count())
    splits = list(getattr(data, "splits", []) or [])
    if splits and config.eval_split not in splits:
        raise UserError(f"config.eval_split={config.eval_split!r}: the dataset has {splits}")
    config.unlock()
    if hasattr(family, "resolve_config"):
        family.resolve_config(config, data)  # e.g. vocab size from the tokenizer
    config.lock()

    # ------------------------------------------------------------------ checkpoints
    ckpt = ckpt_lib.Checkpointer(
        workdir, keep=int(config.keep_checkpoints), keep_best=int(config.keep_best),
        best_metric=config.best_metric, best_mode=config.best_mode)
    latest = ckpt.latest_step()
    if latest is not None:  # before touching anything: is it the same model?
        saved_meta = _read_meta_or_none(ckpt, latest)
        if saved_meta is not None:
            ckpt_lib.check_same_model(saved_meta, config)
            ckpt_lib.warn_changed_schedule(saved_meta, config)
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(config_lib.to_dict(config), f, indent=2)

    # ------------------------------------------------------------------ model, optimizer, state
    mesh = sharding.make_mesh(config.mesh)
    write_run_meta(workdir, config_lib.to_dict(config), mesh)
    parts = assemble_lib.assemble(config, mesh)
    train_iter = data.train_iterator()
    meta = {"family": config.family, "config": config_lib.to_dict(config),
            "data": data.meta(), "genjax_version": runtime.version()}

    # Resume order: workdir checkpoint -> config.init_from (params only) -> fresh init.
    restored = None
    if latest is not None:  # falls back past corrupt steps (or raises with strict_restore)
        restored = ckpt.restore_latest(parts.abstract_state, strict=bool(config.strict_restore))
    book = BatchBook.from_meta(None, 0)  # on_nan=rollback: batches drawn and discarded
    if restored is not None:
        state, data_state, saved_meta, resumed_step = restored
        if data_state:
            train_iter.set_state(data_state)
        book = BatchBook.from_meta(saved_meta, resumed_step)
        logging.info("resumed from %s/%d", ckpt.directory, resumed_step)
        print(f"resumed from step {resumed_step}", flush=True)
    else:
        state = parts.init_state()
        if config.init_from:
            src_dir, src_step = ckpt_lib.parse_init_from(config.init_from)
            src = ckpt_lib.Checkpointer(src_dir, read_only=True)
            params = src.restore_params(src_step, parts.abstract_state.params)
            state = state.replace(params=params)
            if config.optim.ema_decay:
                state = state.replace(ema_params=jax.tree_util.tree_map(lambda x: x.copy(), params))
            print(f"initialised params from {config.init_from}", flush=True)
    start_step = int(jax.device_get(state.step))
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state.params))

    # ------------------------------------------------------------------ logging
    writer = MetricsWriter(workdir)
    unit, units_per_example = getattr(family, "throughput_unit", lambda c: ("examples", 1))(config)
    units_per_step = units_per_example * int(config.batch_size)
    peak = flops.peak_flops_per_device(config.peak_flops_per_device)
    flops_per_step = None
    if hasattr(family, "flops_per_example"):
        flops_per_step = family.flops_per_example(config) * int(config.batch_size)
    lr_fn = optim.learning_rate_fn(config)
    progress = Progress(int(config.total_steps), start_step, unit)
    if is_main:
        print(f"{config.family}: {n_params:,} params | mesh {dict(mesh.shape)} | "
              f"{jax.device_count()} x {jax.devices()[0].device_kind} | "
              f"steps {start_step}->{config.total_steps}", flush=True)

    def run_eval(step: int, max_batches: int | None) -> dict:
        sums: dict[str, float] = {}
        params = state.params
        for local in data.eval_batches(config.eval_split, int(config.batch_size), max_batches):
            out = jax.device_get(parts.eval_step(params, state.model_state,
                                                 assemble_lib.shard_batch(parts, local)))
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        if not sums:
            return {}
        if hasattr(family, "finalize_eval"):
            return family.finalize_eval(sums, **data.eval_kwargs())
        count = max(sums.pop("count", 1.0), 1.0)
        return {k: v / count for k, v in sums.items()}

    last_eval: dict = {}

    def write_grid(step: int) -> None:
        """Image families: a sample grid from the EMA params (raw without EMA)."""
        n = int(config.sample.grid_samples)
        if not (is_main and n and hasattr(family, "sample_images")):
            return
        from genjax.image_grid import save_grid
        params = state.ema_params if jax.tree_util.tree_leaves(state.ema_params) else state.params
        images = family.sample_images(parts.model, params, config,
                                      jax.random.PRNGKey(config.seed), n)
        save_grid(jax.device_get(images), os.path.join(workdir, "samples", f"step_{step}.png"))

    def run_evaluators(step: int) -> None:
        """config.evals with during_training=True (genjax/evaluators), as eval/<name>/<key>."""
        from genjax import evaluators
        names = evaluators.during_training(config)
        if not names:
            return
        ctx = evaluators.for_training(config, parts, state, meta, step, workdir, data)
        for name, result in ctx.run(names).items():
            writer.write(step, result["metrics"], prefix=f"eval/{name}/")
            progress.show(f"eval/{name} @ {step}: " + _fmt(result["metrics"]))

    def save(step: int) -> None:
        metrics = {f"eval/{k}": v for k, v in last_eval.get(step, {}).items()
                   if isinstance(v, (int, float))}
        ckpt.save(step, state, train_iter.get_state(), dict(meta, batches=book.to_meta()),
                  metrics=metrics)

    # ------------------------------------------------------------------ loop
    pending = None  # (step, metrics on device): read one step late, the host never waits

    def handle(step: int, metrics) -> None:
        m = jax.device_get(metrics)
        if int(m.get("skipped", 0)):
            logging.warning("step %d: non-finite gradients, update skipped", step)
        if int(m.get("spike", 0)):
            logging.warning("step %d: loss spike (%.4g), update skipped", step, float(m["loss"]))
        consecutive = int(m.get("consecutive_skips", 0))
        if not math.isfinite(float(m.get("param_norm", 0.0))):
            raise NonFinite(f"step {step}: parameters became non-finite (last good "
                            f"checkpoint: {ckpt.latest_step()})",
                            step - max(consecutive, 1) + 1, step)
        if consecutive >= config.max_consecutive_skips:
            raise NonFinite(f"step {step}: {consecutive} consecutive skipped updates "
                            f"(config.max_consecutive_skips)", step - consecutive + 1, step)
        if not math.isfinite(float(m["loss"])) and not config.skip_nonfinite:
            raise NonFinite(f"step {step}: loss is {m['loss']}", step, step)
        if step % config.log_every_steps == 0 or step == config.total_steps:
            m = {k: float(v) for k, v in m.items()}
            m["lr"] = float(lr_fn(step - 1))
            rate = progress.rate(step)
            mfu = None
            if peak and flops_per_step and rate > 0:
                mfu = flops_per_step * rate / (peak * jax.device_count())
                m["mfu"] = mfu
            if rate > 0:  # none for the first step (compilation)
                m[f"{unit}_per_s"] = units_per_step * rate
            writer.write(step, m)
            progress.show(progress.line(step, m, rate, units_per_step, mfu))

    def roll_back(bad: NonFinite) -> int:
        """on_nan=rollback: restore the newest checkpoint before the bad steps, mark their
        batches bad (never trained on again) and return the restored step."""
        nonlocal state, book
        if config.on_nan != "rollback":
            raise bad
        if book.rollbacks >= config.max_rollbacks:
            raise FloatingPointError(f"{bad} after {book.rollbacks} rollbacks "
                                     f"(config.max_rollbacks)")
        ordinals = book.mark_bad(bad.first, bad.last)
        target = ckpt.rollback_to(bad.first)
        if target is None:
            raise FloatingPointError(f"{bad}; no checkpoint before step {bad.first} to "
                                     f"roll back to")
        state, data_state, saved_meta = ckpt.restore(target, parts.abstract_state)
        train_iter.set_state(data_state)
        book = book.rolled_back_to(BatchBook.from_meta(saved_meta, target))
        msg = (f"{bad}; rolled back to step {target}, skipping batches {ordinals} "
               f"(rollback {book.rollbacks}/{config.max_rollbacks})")
        logging.warning(msg)
        print(f"warning: {msg}", flush=True)
        writer.write(target, {"rollback/to_step": target, "rollback/count": book.rollbacks})
        return target

    total = int(config.total_steps)
    last_step = start_step
    steps_this_call = 0
    keep_ordinals = int(config.max_consecutive_skips) + 2
    t0 = time.perf_counter()
    step = start_step
    try:
        while step < total:
            step += 1
            ordinal, local = book.draw(train_iter, step, keep_ordinals)
            batch = assemble_lib.shard_batch(parts, faults.poison_if(ordinal, local))
            state, metrics = parts.train_step(state, batch)
            last_step = step
            steps_this_call += 1
            if steps_this_call == 1:  # compile time once; throughput from steady steps only
                jax.block_until_ready(metrics)
                progress.show(f"step {step}: compiled and ran in "
                              f"{progress.first_step_done(step):.1f} s")
            preempted = sigterm.raised  # read once: a signal arriving later waits for the next step
            stopping = preempted or (stop_after is not None and steps_this_call >= stop_after)
            evaluating = (bool(config.eval_every_steps) and step % config.eval_every_steps == 0
                          and step < total)
            saving = step % config.ckpt_every_steps == 0 or step == total or stopping
            try:
                if pending is not None:
                    handle(*pending)
                pending = (step, metrics)
                if saving or evaluating:  # never checkpoint or evaluate unchecked params
                    handle(*pending)
                    pending = None
            except NonFinite as bad:
                step = last_step = roll_back(bad)
                pending = None
                progress.reset(step)
                continue
            if evaluating:
                ev = run_eval(step, int(config.eval_batches))
                if config.keep_best and config.best_metric not in {f"eval/{k}" for k in ev}:
                    raise ConfigError(f"config.best_metric={config.best_metric!r} (for "
                                      f"keep_best) is not an eval metric of this run; it has "
                                      f"{sorted('eval/' + k for k in ev)}")
                last_eval.clear()
                last_eval[step] = ev
                writer.write(step, ev, prefix="eval/")
                progress.show(f"eval @ {step}: " + _fmt(ev))
                write_grid(step)
                run_evaluators(step)
                progress.reset(step)
            if saving:
                save(step)
                if faults.at("kill_after_save", step):
                    ckpt.wait()
            faults.kill_if("kill", step)  # fault injection for the resume tests
            faults.kill_if("kill_after_save", step)
            if preempted:
                ckpt.wait()
                print(f"preempted: saved step {step}, exiting with {EXIT_PREEMPTED}", flush=True)
                raise Preempted()
            if stopping:
                break
        if pending is not None:
            handle(*pending)
    finally:
        try:
            ckpt.close()  # raises if the last save failed
        finally:
            writer.close()

    # ------------------------------------------------------------------ final eval
    if last_step < total:
        return {}
    elapsed = time.perf_counter() - t0
    final = run_eval(total, int(config.final_eval_batches) or None)
    final["train_seconds"] = elapsed
    write_grid(total)
    if is_main:
        with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
            json.dump(final, f, indent=2)
        print(f"final {config.eval_split} ({config.family}): {_fmt(final)}", flush=True)
    return final


def _read_meta_or_none(ckpt, step):
    try:
        return ckpt.read_meta(step)
    except Exception:  # noqa: BLE001 - a corrupt step; restore_latest deals with it
        return None


def _fmt(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in metrics.items())


def config_lib_family(config):
    from genjax import losses
    return losses.get(config.family)


# ---------------------------------------------------------------------- CLI
def main(argv) -> None:
    from absl import flags
    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.config is None:
        raise UserError("--config is required, e.g. --config=configs/lm_shakespeare.py:cpu")
    runtime.setup_logging()
    train(FLAGS.config, FLAGS.workdir)


def define_flags():
    from absl import flags
    from ml_collections import config_flags
    config_flags.DEFINE_config_file("config", None, "configs/<name>.py[:preset]", lock_config=True)
    flags.DEFINE_string("workdir", None, "run directory (resumes if it holds checkpoints)",
                        required=True)


if __name__ == "__main__":
    define_flags()
    config_lib.run_cli(main)
