"""Preemption: SIGTERM -> a checkpoint at the next step boundary, exit 143, and the same
command resumes from it without replaying a step. (Kills at every other point, exact
resume and seed determinism: tests/test_faults.py.)"""
import json
import os
import subprocess
import sys

import pytest

from tests import subproc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CMD = ["-m", "genjax.train", "--config=configs/lm_shakespeare.py:tiny",
       "--config.total_steps=100000", "--config.log_every_steps=1",
       "--config.ckpt_every_steps=100000", "--config.eval_every_steps=0"]


def run_until_sigterm(workdir, data_dir, after_lines=3):
    """Starts training, sends SIGTERM once `after_lines` step lines were printed."""
    env = subproc.env(GENJAX_DATA_DIR=data_dir, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, *CMD, f"--workdir={workdir}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    head = []
    try:
        for line in proc.stdout:  # wait until training is under way
            head.append(line)
            if sum(s.startswith("step ") for s in head) >= after_lines:
                break
        proc.send_signal(subprocess.signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, "".join(head) + out, err


def logged_steps(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["step"] for line in f if '"loss"' in line]


@pytest.mark.slow
def test_sigterm_saves_at_the_next_step_exits_143_and_resume_replays_no_step(tmp_path,
                                                                             data_dir):
    rc, out, err = run_until_sigterm(tmp_path, data_dir)
    assert rc == 143, err[-3000:]
    saved = [int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()]
    assert len(saved) == 1 and saved[0] >= 3  # off the (100000-step) interval
    assert f"preempted: saved step {saved[0]}, exiting with 143" in out
    first_run = logged_steps(tmp_path)
    assert first_run == list(range(1, saved[0] + 1))

    rc, out, err = run_until_sigterm(tmp_path, data_dir, after_lines=1)
    assert rc == 143, err[-3000:]
    assert f"resumed from step {saved[0]}\n" in out
    assert logged_steps(tmp_path)[len(first_run)] == saved[0] + 1  # no step replayed
