"""What the loop does with a step's metrics once they reach the host (one step late):
stop on trouble (non-finite params, too many skipped updates, a NaN loss that is not
skipped) and, every `log_every_steps`, write metrics.jsonl / TensorBoard and the
progress line (throughput, MFU, ETA)."""
from __future__ import annotations

import math

import jax

from genjax import families, flops, optim
from genjax.errors import NonFinite, warn
from genjax.metrics_writer import MetricsWriter, Progress


class StepLog:
    def __init__(self, config, family, writer: MetricsWriter, start_step: int):
        self.config, self.writer = config, writer
        unit, per_example = (family.throughput_unit(config)
                             if families.has(family, "throughput_unit") else ("examples", 1))
        self.unit = unit
        self.units_per_step = per_example * int(config.batch_size)
        self.peak = flops.peak_flops_per_device(config.peak_flops_per_device)
        self.flops_per_step = (family.flops_per_example(config) * int(config.batch_size)
                               if families.has(family, "flops_per_example") else None)
        self.lr_fn = optim.learning_rate_fn(config)
        self.progress = Progress(int(config.total_steps), start_step, unit)

    def handle(self, step: int, metrics, last_good_step) -> None:
        """Reads `metrics` of `step`; raises NonFinite when training went bad."""
        config = self.config
        m = jax.device_get(metrics)
        if int(m.get("skipped", 0)):
            warn(f"step {step}: non-finite gradients, update skipped")
        if int(m.get("spike", 0)):
            warn(f"step {step}: loss spike ({float(m['loss']):.4g}), update skipped")
        consecutive = int(m.get("consecutive_skips", 0))
        if not math.isfinite(float(m.get("param_norm", 0.0))):
            raise NonFinite(f"step {step}: parameters became non-finite (last good "
                            f"checkpoint: {last_good_step})", step - max(consecutive, 1) + 1, step)
        if consecutive >= config.max_consecutive_skips:
            raise NonFinite(f"step {step}: {consecutive} consecutive skipped updates "
                            f"(config.max_consecutive_skips)", step - consecutive + 1, step)
        if not math.isfinite(float(m["loss"])) and not config.skip_nonfinite:
            raise NonFinite(f"step {step}: loss is {m['loss']}", step, step)
        if step % config.log_every_steps == 0 or step == config.total_steps:
            self._log(step, {k: float(v) for k, v in m.items()})

    def _log(self, step: int, m: dict) -> None:
        m["lr"] = float(self.lr_fn(step - 1))
        rate = self.progress.rate(step)
        mfu = None
        if self.peak and self.flops_per_step and rate > 0:
            mfu = self.flops_per_step * rate / (self.peak * jax.device_count())
            m["mfu"] = mfu
        if rate > 0:  # none for the first step (compilation)
            m[f"{self.unit}_per_s"] = self.units_per_step * rate
        self.writer.write(step, m)
        self.progress.show(self.progress.line(step, m, rate, self.units_per_step, mfu))

    def show(self, text: str) -> None:
        self.progress.show(text)
