"""Multi-host on one machine: 2 processes x 4 CPU devices train (and resume) exactly like
1 process x 8 devices. jax.distributed is set up from JAX_COORDINATOR_ADDRESS /
JAX_NUM_PROCESSES / JAX_PROCESS_ID (genjax/runtime.py); each process loads its own rows of
every global batch (genjax/data/lm_loader.py)."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANG_S = 300  # per launch: a process stuck in a collective fails the test instead of hanging it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _cmd(workdir, text):
    return [sys.executable, "-m", "genjax.train", "--config=configs/lm_shakespeare.py:tiny",
            f"--workdir={workdir}", "--config.total_steps=8", "--config.log_every_steps=1",
            "--config.ckpt_every_steps=2", "--config.eval_every_steps=0",
            "--config.data.name=text", f"--config.data.text_file={text}"]


def _launch(workdir, text, data_dir, num_processes, devices_per_process, kill_at=None):
    """Runs the train command as `num_processes` processes; returns their outputs."""
    port = _free_port()
    procs = []
    for i in range(num_processes):
        env = dict(os.environ, JAX_PLATFORMS="cpu", GENJAX_DATA_DIR=data_dir,
                   XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}")
        if num_processes > 1:
            env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES=str(num_processes),
                       JAX_PROCESS_ID=str(i), GENJAX_INIT_TIMEOUT="60")
        if kill_at is not None:
            env["GENJAX_FAULT_KILL_AT_STEP"] = str(kill_at)
        procs.append(subprocess.Popen(_cmd(workdir, text), cwd=ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=HANG_S)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"a process hung for {HANG_S} s:\n" +
                    "\n".join((p.communicate()[0] or "")[-2000:] for p in procs))
    return [(p.returncode, out) for p, out in zip(procs, outs)]


def _losses(workdir):
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if "loss" in row:
                out[row["step"]] = row["loss"]  # a resumed run's last word on each step
    return out


@pytest.mark.slow
def test_two_processes_train_and_resume_like_one(tmp_path, data_dir):
    from genjax.data.text_builders import prepare
    rng = np.random.default_rng(0)
    words = "the king queen lord love death night day sword crown heart fair sweet".split()
    text = tmp_path / "text.txt"
    text.write_text("\n".join(" ".join(rng.choice(words, 7)) for _ in range(600)) + "\n")
    prepare(str(text), data_dir)  # once: the processes must not race to build it

    [(rc, out)] = _launch(tmp_path / "one", text, data_dir, 1, 8)
    assert rc == 0, out[-3000:]

    # Two processes, killed -9 at step 5 (after the step-4 checkpoint was started) ...
    killed = _launch(tmp_path / "two", text, data_dir, 2, 4, kill_at=5)
    assert [rc for rc, _ in killed] == [-9, -9], "\n".join(o[-2000:] for _, o in killed)
    # ... then the same command: both resume from the last complete checkpoint.
    resumed = _launch(tmp_path / "two", text, data_dir, 2, 4)
    for rc, out in resumed:
        assert rc == 0, out[-3000:]
        assert "resumed from step" in out
    assert "8 x cpu" in resumed[0][1]  # one global mesh of 2 x 4 devices

    want, got = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(want) == sorted(got) == list(range(1, 9))
    np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)],
                               rtol=1e-5)
    final_one = json.loads((tmp_path / "one" / "final_metrics.json").read_text())
    final_two = json.loads((tmp_path / "two" / "final_metrics.json").read_text())
    np.testing.assert_allclose(final_two["loss"], final_one["loss"], rtol=1e-5)
