"""Exact resume: kill -9 mid-run, run the same command again, get the same numbers."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(workdir, data_dir, *overrides, kill_at=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", GENJAX_DATA_DIR=data_dir)
    if kill_at is not None:
        env["GENJAX_FAULT_KILL_AT_STEP"] = str(kill_at)
    cmd = [sys.executable, "-m", "genjax.train", "--config=configs/lm_shakespeare.py:tiny",
           f"--workdir={workdir}", "--config.log_every_steps=1", "--config.ckpt_every_steps=5",
           "--config.total_steps=20", "--config.model.dropout=0.1", *overrides]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def losses_by_step(workdir):
    """Last logged loss of each step (a resumed run logs some steps twice)."""
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if "loss" in row:
                out[row["step"]] = row["loss"]
    return out


@pytest.mark.slow
def test_kill_minus_9_then_rerun_equals_uninterrupted_run(tmp_path, data_dir):
    ref = train(tmp_path / "ref", data_dir)
    assert ref.returncode == 0, ref.stderr[-3000:]
    killed = train(tmp_path / "run", data_dir, kill_at=13)
    assert killed.returncode == -9
    steps = sorted(os.listdir(tmp_path / "run" / "checkpoints"))
    assert steps and "20" not in steps
    resumed = train(tmp_path / "run", data_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step" in resumed.stdout
    want, got = losses_by_step(tmp_path / "ref"), losses_by_step(tmp_path / "run")
    assert sorted(want) == list(range(1, 21)) and sorted(got) == sorted(want)
    assert got == want  # bit for bit: dropout RNG, data order and optimizer state all resumed
    final_ref = json.loads((tmp_path / "ref" / "final_metrics.json").read_text())
    final_run = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    assert final_ref["loss"] == final_run["loss"]


@pytest.mark.slow
def test_sigterm_saves_at_the_next_step_and_exits_143(tmp_path, data_dir):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", GENJAX_DATA_DIR=data_dir,
               PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "genjax.train", "--config=configs/lm_shakespeare.py:tiny",
           f"--workdir={tmp_path}", "--config.total_steps=100000", "--config.log_every_steps=7",
           "--config.ckpt_every_steps=100000", "--config.eval_every_steps=0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # wait until training is under way
            if line.startswith("step "):
                break
        proc.send_signal(subprocess.signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-3000:]
    saved = [int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()]
    assert len(saved) == 1 and saved[0] >= 7  # off the (100000-step) interval
    assert f"preempted: saved step {saved[0]}" in out
    again = train(tmp_path, data_dir, f"--config.total_steps={saved[0] + 2}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from step {saved[0]}" in again.stdout


def params_fingerprint(workdir):
    """Checksums stored with the final checkpoint (per-leaf, exact bits)."""
    from genjax.checkpoint import Checkpointer
    ck = Checkpointer(str(workdir), read_only=True)
    return ck.read_meta(ck.latest_step())["checksums"]


@pytest.mark.slow
def test_same_seed_gives_bitwise_identical_params_in_fresh_processes(tmp_path, data_dir):
    runs = {}
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        proc = train(tmp_path / name, data_dir, f"--config.seed={seed}",
                     "--config.total_steps=6", "--config.eval_every_steps=0")
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = params_fingerprint(tmp_path / name)
    assert runs["a"] == runs["b"]
    assert runs["a"]["params/token_embed"] != runs["c"]["params/token_embed"]
