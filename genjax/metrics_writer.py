"""Run outputs: metrics.jsonl (one JSON object per logged step, flushed per line),
TensorBoard event files (tensorboardX: no TensorFlow), and the live progress line.
Only process 0 writes."""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax


def read_rows(path: str, *, missing_ok: bool = True) -> list[dict]:
    """The rows of a metrics.jsonl in file order (a resumed run logs some steps twice),
    without blank lines, a last line cut by a kill, or a line whose bytes are not UTF-8
    (a damaged disk block). A missing file: [] when `missing_ok`, else FileNotFoundError."""
    if missing_ok and not os.path.isfile(path):
        return []
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:  # bad bytes: U+FFFD, no JSON
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows.append(row)
    return rows


def _scalar(v: Any) -> float | int:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() and abs(f) < 2**53 and not isinstance(v, float) else f


class MetricsWriter:
    def __init__(self, workdir: str, *, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._jsonl = None
        self._tb = None
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)
            try:
                from tensorboardX import SummaryWriter
                self._tb = SummaryWriter(os.path.join(workdir, "tb"))
            except ImportError:  # optional
                self._tb = None

    def write(self, step: int, metrics: dict[str, Any], prefix: str = "") -> None:
        if not self.enabled:
            return
        row = {"step": int(step)}
        row.update({f"{prefix}{k}": _scalar(v) for k, v in metrics.items()})
        self._jsonl.write(json.dumps(row, allow_nan=True) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, int(step))

    def close(self) -> None:
        if self._jsonl:
            self._jsonl.close()
        if self._tb:
            self._tb.close()


def format_eta(seconds: float) -> str:
    """Seconds -> "HH:MM:SS", with days in front from 24 h on ("3d 04:05:06"); "?" if
    unknown (inf/nan)."""
    if not math.isfinite(seconds):
        return "?"
    days, rest = divmod(int(round(max(seconds, 0.0))), 86400)
    hms = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {hms}" if days else hms


class Progress:
    """step, loss, throughput, MFU and ETA: one printed line per logged step. The first
    step of a run (compilation included) is timed once (`first_step_done`) and left out
    of the throughput, which covers steady steps only."""

    def __init__(self, total_steps: int, start_step: int, unit: str = "examples"):
        self.total = total_steps
        self.start_step = start_step
        self.unit = unit
        self.t_last = time.perf_counter()
        self.step_last = start_step

    def first_step_done(self, step: int) -> float:
        """Seconds since the start (compile + first step); later rates start here."""
        now = time.perf_counter()
        seconds = now - self.t_last
        self.t_last, self.step_last = now, step
        return seconds

    def rate(self, step: int) -> float:
        """Steps per second since the last call (0.0 if no step has finished since)."""
        ds = step - self.step_last
        if ds <= 0:
            return 0.0
        now = time.perf_counter()
        dt = now - self.t_last
        self.t_last, self.step_last = now, step
        return ds / dt if dt > 0 else 0.0

    def reset(self, step: int) -> None:
        """Excludes the time since the last call (e.g. an eval) from the next rate."""
        self.t_last, self.step_last = time.perf_counter(), step

    def line(self, step: int, metrics: dict, steps_per_s: float, units_per_step: float,
             mfu: float | None) -> str:
        """The progress line; without a rate (steps_per_s 0) no throughput and no ETA."""
        parts = [f"step {step}/{self.total}", f"loss {metrics.get('loss', float('nan')):.4f}"]
        if "lr" in metrics:
            parts.append(f"lr {metrics['lr']:.2e}")
        if steps_per_s > 0:
            parts.append(f"{units_per_step * steps_per_s:,.0f} {self.unit}/s")
            if mfu is not None:
                parts.append(f"MFU {100 * mfu:.1f}%")
            parts.append(f"ETA {format_eta((self.total - step) / steps_per_s)}")
        return " | ".join(parts)

    def show(self, text: str) -> None:
        if jax.process_index() != 0:
            return
        print(text, flush=True)
