r"""The one training loop, for every family.

  python -m genjax.train --config=configs/lm_shakespeare.py:cpu --workdir=runs/lm
  python -m genjax.train --config=configs/lm_shakespeare.py:tiny --workdir=W \
      --config.optim.lr=1e-3            # overrides; unknown keys are an error

Re-running the same command resumes from the workdir. Outputs in the workdir:
config.json, metrics.jsonl, tb/ (TensorBoard), checkpoints/, final_metrics.json.
SIGTERM -> a checkpoint at the next step boundary, then exit code 143 (EXIT_PREEMPTED).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from typing import Any

import jax
import numpy as np

from genjax import assemble as assemble_lib
from genjax import checkpoint as ckpt_lib
from genjax import (cli, config_lib, eval_sums, evaluators, faults, families, preemption, resume,
                    rollback, runtime, sharding)
from genjax.errors import EXIT_PREEMPTED, ConfigError, NonFinite, Preempted, UserError
from genjax.image_grid import save_grid
from genjax.metrics_writer import MetricsWriter
from genjax.rollback import BatchBook
from genjax.step_log import StepLog
from genjax.workdir import WorkdirLock, make_workdir, remove_empty_workdir, write_run_meta

class _SigtermFlag:
    """Set by SIGTERM; the loop checks it at every step boundary. The handler is the
    process's while the run lasts and the previous one comes back after it. A run inside
    another (an evaluator that trains during training) keeps the outer run's handler: it
    runs to its end, and the outer run checkpoints at its next step boundary."""
    active: "_SigtermFlag | None" = None

    def __init__(self):
        self.raised = False
        self._previous = None

    def install(self):
        if _SigtermFlag.active is not None:
            return self  # nested: never raised
        def handler(signum, frame):
            logging.warning("SIGTERM: checkpointing at the next step boundary")
            self.raised = True
        try:
            self._previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread (e.g. inside a test runner thread)
            return self
        _SigtermFlag.active = self
        return self

    def uninstall(self) -> None:
        if _SigtermFlag.active is self:
            _SigtermFlag.active = None
            signal.signal(signal.SIGTERM, signal.SIG_DFL if self._previous is None
                          else self._previous)


def train(config, workdir: str, *, stop_after: int | None = None, data=None) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming if possible); returns the final eval metrics.

    `stop_after`: leave the loop after this many steps of *this* call (tests use it to
    simulate an interruption; the checkpoint of the last step is still written).
    `data`: use this data object instead of `family.make_data(config)` (same interface;
    e.g. genjax/data/array_data.py for generated images held in memory).
    """
    if config.deterministic:  # must precede backend initialisation
        runtime.request_deterministic_ops()
    # Bad input fails here, before the workdir is touched: the shared keys' domains, the
    # family's contract, a mesh the devices cannot hold, a workdir that cannot be one.
    config_lib.check_shared(config)
    family = families.for_config(config)
    runtime.initialize_distributed(peer_timeout_s=int(config.peer_timeout_s))
    mesh = sharding.make_mesh(config.mesh)
    made = not os.path.exists(workdir)
    workdir = make_workdir(workdir)
    try:
        lock = WorkdirLock(workdir).acquire()
        try:
            return _train(config, workdir, family, mesh, stop_after, data)
        finally:
            lock.release()
    except BaseException:  # a run that failed in its setup leaves no empty folders behind
        remove_empty_workdir(workdir, made)
        raise


@dataclasses.dataclass
class _Run:
    """What the loop body reads and changes; built once by `_train`."""
    config: Any
    workdir: str
    family: Any
    parts: assemble_lib.Parts
    data: Any
    train_iter: Any
    ckpt: ckpt_lib.Checkpointer
    writer: MetricsWriter
    log: StepLog
    meta: dict
    state: Any
    book: BatchBook
    last_eval: dict = dataclasses.field(default_factory=dict)  # {step: metrics} of the last eval


def _train(config, workdir, family, mesh, stop_after, data=None):
    sigterm = _SigtermFlag().install()
    try:
        return _train_with(config, workdir, family, mesh, stop_after, data, sigterm)
    finally:
        sigterm.uninstall()


def _train_with(config, workdir, family, mesh, stop_after, data, sigterm):
    # ------------------------------------------------------------------ data (fails before compiling)
    data = _load_data(config, family) if data is None else _check_data(config, family, data)
    # ------------------------------------------------------------------ checkpoints, model, state
    ckpt = ckpt_lib.Checkpointer(
        workdir, keep=int(config.keep_checkpoints), keep_best=int(config.keep_best),
        best_metric=config.best_metric, best_mode=config.best_mode)
    try:
        run, start_step = _setup(config, workdir, family, mesh, data, ckpt)
    except BaseException:
        ckpt.abandon()  # orbax's threads end now, not racing the exit with a traceback
        raise
    # ------------------------------------------------------------------ loop
    t0 = time.perf_counter()
    try:
        last_step = _loop(run, start_step, stop_after, sigterm)
    finally:
        try:
            ckpt.close()  # raises if the last save failed
        finally:
            run.writer.close()
    # ------------------------------------------------------------------ final eval
    total = int(config.total_steps)
    if last_step < total:
        return {}
    elapsed = time.perf_counter() - t0
    final = dict(_eval(run, int(config.final_eval_batches) or None), train_seconds=elapsed)
    _write_grid(run, total)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
            json.dump(final, f, indent=2)
        print(f"final {config.eval_split} ({config.family}): {_fmt(final)}", flush=True)
    return final


def _setup(config, workdir, family, mesh, data, ckpt) -> tuple[_Run, int]:
    """The run's state (fresh or resumed), its writers and its banner; (run, start step)."""
    resume.check_workdir(ckpt, config, family)
    parts = assemble_lib.assemble(config, mesh)
    train_iter = data.train_iterator()
    start = resume.start(ckpt, parts, config, train_iter)
    writer = MetricsWriter(workdir)
    run = _Run(config=config, workdir=workdir, family=family, parts=parts, data=data,
               train_iter=train_iter, ckpt=ckpt, writer=writer,
               log=StepLog(config, family, writer, start.step), state=start.state,
               book=start.book, meta={"family": config.family, "config": config_lib.to_dict(config),
                                      "data": data.meta(), "genjax_version": runtime.version()})
    if aux := families.aux_params(family, config):  # params another run's init_from skips
        run.meta["aux_params"] = list(aux)
    _banner(run, mesh, start.step)
    return run, start.step


def _loop(run: _Run, step: int, stop_after: int | None, sigterm: _SigtermFlag) -> int:
    """Steps until total_steps (or `stop_after` steps, or SIGTERM); returns the last step.
    Metrics are read one step late (the host never waits), except before a checkpoint or
    an eval, which never see unchecked params."""
    config, total = run.config, int(run.config.total_steps)
    keep_ordinals = int(config.max_consecutive_skips) + 2
    pending, last_step, steps_this_call = None, step, 0
    stop = preemption.StopStep(total)  # several processes stop at one step
    while step < total:
        step += 1
        ordinal, local = run.book.draw(run.train_iter, step, keep_ordinals)
        batch = assemble_lib.shard_batch(run.parts, faults.poison_if(ordinal, local))
        run.state, metrics = run.parts.train_step(run.state, batch)
        last_step, steps_this_call = step, steps_this_call + 1
        if steps_this_call == 1:  # compile time once; throughput from steady steps only
            jax.block_until_ready(metrics)
            _write_records(run)
            run.log.show(f"step {step}: compiled and ran in "
                         f"{run.log.progress.first_step_done(step):.1f} s")
        faults.kill_if("term", step)
        # read once: a later signal waits for the next step
        preempted = stop.should_stop(step, sigterm.raised)
        stopping = preempted or (stop_after is not None and steps_this_call >= stop_after)
        evaluating = (bool(config.eval_every_steps) and step % config.eval_every_steps == 0
                      and step < total and not preempted)  # a preempted run saves first
        saving = step % config.ckpt_every_steps == 0 or step == total or stopping
        try:
            if pending is not None:
                run.log.handle(*pending, run.ckpt.latest_step())
            pending = (step, metrics)
            if saving or evaluating:
                run.log.handle(*pending, run.ckpt.latest_step())
                pending = None
        except NonFinite as bad:
            run.state, run.book, step = rollback.roll_back(
                bad, config=config, ckpt=run.ckpt, abstract_state=run.parts.abstract_state,
                book=run.book, train_iter=run.train_iter, writer=run.writer)
            last_step, pending = step, None
            run.log.progress.reset(step)
            continue
        if evaluating:
            _periodic_eval(run, step)
        if saving:
            _save(run, step)
        faults.kill_if("kill", step)  # fault injection for the resume tests
        faults.kill_if("kill_after_save", step)
        if preempted:
            run.ckpt.wait()
            print(f"preempted: saved step {step}, exiting with {EXIT_PREEMPTED}", flush=True)
            raise Preempted()
        if stopping:
            break
    if pending is not None:
        run.log.handle(*pending, run.ckpt.latest_step())
    stop.finished(last_step)
    return last_step


def _write_records(run: _Run) -> None:
    """W/config.json and W/run_meta.json of this call, once its first step has run: a
    resume refused or failing to compile, or one with no step left to take, leaves the
    records of the run that made the checkpoints."""
    if jax.process_index() == 0:
        with open(os.path.join(run.workdir, "config.json"), "w") as f:
            json.dump(config_lib.to_dict(run.config), f, indent=2)
    write_run_meta(run.workdir, config_lib.to_dict(run.config), run.parts.mesh)


# ---------------------------------------------------------------------- pieces of the loop
def _load_data(config, family):
    data = family.make_data(config, process_index=jax.process_index(),
                            process_count=jax.process_count())
    return _check_data(config, family, data)


def _check_data(config, family, data):
    """The eval split exists; data-dependent config keys (vocab size...) resolved."""
    splits = list(getattr(data, "splits", []) or [])
    if splits and config.eval_split not in splits:
        raise UserError(f"config.eval_split={config.eval_split!r}: the dataset has {splits}")
    config.unlock()
    if families.has(family, "resolve_config"):
        family.resolve_config(config, data)
    config.lock()
    evaluators.check_during_training(config, families.for_inference(family), jax.process_count())
    return data


def _banner(run: _Run, mesh, start_step: int) -> None:
    if jax.process_index() != 0:
        return
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(run.state.params))
    print(f"{run.config.family}: {n_params:,} params | mesh {dict(mesh.shape)} | "
          f"{jax.device_count()} x {jax.devices()[0].device_kind} | "
          f"steps {start_step}->{run.config.total_steps}", flush=True)


def _eval(run: _Run, max_batches: int | None) -> dict:
    """The family's eval of the raw params on config.eval_split."""
    batches = run.data.eval_batches(run.config.eval_split, int(run.config.batch_size), max_batches)
    return eval_sums.evaluate(run.parts, run.state.params, run.state.model_state, batches,
                              eval_sums.eval_kwargs(run.data, run.config.eval_split))


def _periodic_eval(run: _Run, step: int) -> None:
    ev = _eval(run, int(run.config.eval_batches))
    config = run.config
    if config.keep_best and config.best_metric not in {f"eval/{k}" for k in ev}:
        raise ConfigError(f"config.best_metric={config.best_metric!r} (for keep_best) is not "
                          f"an eval metric of this run; it has {sorted('eval/' + k for k in ev)}")
    run.last_eval = {step: ev}
    run.writer.write(step, ev, prefix="eval/")
    run.log.show(f"eval @ {step}: " + _fmt(ev))
    _write_grid(run, step)
    _run_evaluators(run, step)
    run.log.progress.reset(step)


def _write_grid(run: _Run, step: int) -> None:
    """A sample grid W/samples/step_<step>.png from the EMA params (raw without EMA). Every
    process samples (the params may be sharded over all of them); process 0 writes."""
    n = int(run.config.sample.grid_samples)
    family = families.for_inference(run.family)
    if not (n and families.has(family, "sample_images")):
        return
    params, model_state, _ = assemble_lib.inference_params(run.parts, run.state, "ema")
    images = family.sample_images(run.parts.model, params, run.config,
                                  jax.random.PRNGKey(run.config.seed), n, model_state=model_state)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        images = multihost_utils.process_allgather(images, tiled=True)
    if jax.process_index() == 0:
        save_grid(jax.device_get(images), os.path.join(run.workdir, "samples",
                                                       f"step_{step}.png"))


def _run_evaluators(run: _Run, step: int) -> None:
    """config.evals with during_training=True (genjax/evaluators), as eval/<name>/<key>."""
    names = evaluators.during_training(run.config, families.for_inference(run.family))
    if not names:
        return
    ctx = evaluators.for_training(run.config, run.parts, run.state, run.meta, step,
                                  run.workdir, run.data, train_fn=train)
    for name, result in ctx.run(names).items():
        run.writer.write(step, result["metrics"], prefix=f"eval/{name}/")
        run.log.show(f"eval/{name} @ {step}: " + _fmt(result["metrics"]))


def _save(run: _Run, step: int) -> None:
    metrics = {f"eval/{k}": v for k, v in run.last_eval.get(step, {}).items()
               if isinstance(v, (int, float))}
    run.ckpt.save(step, run.state, run.train_iter.get_state(),
                  dict(run.meta, batches=run.book.to_meta()), metrics=metrics)
    if faults.at("kill_after_save", step):
        run.ckpt.wait()


def _fmt(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in metrics.items())


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
    cli.run(main, multi_process=True)
