"""Multi-host on one machine: 2 processes x 4 CPU devices train (and resume) exactly like
1 process x 8 devices. jax.distributed is set up from JAX_COORDINATOR_ADDRESS /
JAX_NUM_PROCESSES / JAX_PROCESS_ID (genjax/runtime.py); each process loads its own rows of
every global batch (genjax/data/lm_loader.py)."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import subproc
from tests.subproc import losses_by_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANG_S = 300  # per launch: a process stuck in a collective fails the test instead of hanging it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _cmd(workdir, text, *extra):
    return [sys.executable, "-m", "genjax.train", "--config=configs/lm_shakespeare.py:tiny",
            f"--workdir={workdir}", "--config.total_steps=8", "--config.log_every_steps=1",
            "--config.ckpt_every_steps=2", "--config.eval_every_steps=0",
            "--config.final_eval_batches=2",
            "--config.data.name=text", f"--config.data.text_file={text}", *extra]


def _launch(workdir, text, data_dir, num_processes, devices_per_process, faults=(), extra=(),
            hang_s=HANG_S, cmd=None):
    """Runs the train command (`cmd`, default _cmd's) as `num_processes` processes; returns
    their outputs. faults[i]: GENJAX_FAULTS of process i (genjax/faults.py)."""
    port = _free_port()
    procs = []
    for i in range(num_processes):
        env = subproc.env(devices_per_process, GENJAX_DATA_DIR=data_dir,
                          GENJAX_FAULTS=faults[i] if i < len(faults) else "")
        if num_processes > 1:
            env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES=str(num_processes),
                       JAX_PROCESS_ID=str(i), GENJAX_INIT_TIMEOUT="60")
        procs.append(subprocess.Popen(cmd or _cmd(workdir, text, *extra), cwd=ROOT, env=env,
                                      text=True, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=hang_s)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"a process hung for {hang_s} s:\n" +
                    "\n".join((p.communicate()[0] or "")[-2000:] for p in procs))
    return [(p.returncode, out) for p, out in zip(procs, outs)]


@pytest.fixture(scope="module")
def text(tmp_path_factory, data_dir):
    from genjax.data.text_builders import prepare
    rng = np.random.default_rng(0)
    words = "the king queen lord love death night day sword crown heart fair sweet".split()
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text("\n".join(" ".join(rng.choice(words, 7)) for _ in range(600)) + "\n")
    prepare(str(path), data_dir)  # once: the processes must not race to build it
    return path


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, text, data_dir):
    """The reference: the same run as 1 process x 8 devices (its workdir)."""
    workdir = tmp_path_factory.mktemp("one_process")
    [(rc, out)] = _launch(workdir, text, data_dir, 1, 8)
    assert rc == 0, out[-3000:]
    return workdir


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, text, data_dir):
    """(workdir, outputs of the killed launch, outputs of the resumed one): two processes
    killed -9 at step 5 (after the step-4 checkpoint was started), then the same command
    again, which finishes the 8 steps (and leaves checkpoints 6 and 8)."""
    workdir = tmp_path_factory.mktemp("two")
    killed = _launch(workdir, text, data_dir, 2, 4, faults=("kill@5", "kill@5"))
    resumed = _launch(workdir, text, data_dir, 2, 4)
    return workdir, killed, resumed


@pytest.mark.slow
def test_two_processes_train_and_resume_like_one(two_processes, one_process):
    workdir, killed, resumed = two_processes
    # Killed at step 5: the one that gets there second may be ended first by the
    # distributed runtime, whose coordination service went with process 0, or by the CPU
    # collectives' transport (gloo aborts: seen once, a message of the dead peer's all-reduce
    # read where the survivor expected another), as a host that loses its peer would be.
    assert -9 in [rc for rc, _ in killed] and all(
        rc == -9 or (rc != 0 and ("coordination service" in out or "gloo::" in out))
        for rc, out in killed), "\n".join(f"exit {rc}: {o[-2000:]}" for rc, o in killed)
    # ... then the same command: both resume from the last complete checkpoint.
    for rc, out in resumed:
        assert rc == 0, out[-3000:]
        assert "resumed from step" in out
    assert "8 x cpu" in resumed[0][1]  # one global mesh of 2 x 4 devices

    want, got = losses_by_step(one_process), losses_by_step(workdir)
    assert sorted(want) == sorted(got) == list(range(1, 9))
    np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)],
                               rtol=1e-5)
    final_one = json.loads((one_process / "final_metrics.json").read_text())
    final_two = json.loads((workdir / "final_metrics.json").read_text())
    np.testing.assert_allclose(final_two["loss"], final_one["loss"], rtol=1e-5)


@pytest.mark.slow
def test_a_sigterm_to_one_process_stops_both_at_one_checkpoint_and_resumes_like_one(
        tmp_path, text, data_dir, one_process):
    """Only process 0 is told to stop (after step 3): both save the same step, exit 143,
    and the resumed pair ends where one process does. With each process stopping on its own
    signal alone, process 1 waited in the next step's collective forever."""
    stopped = _launch(tmp_path / "two", text, data_dir, 2, 4, faults=("term@3", ""),
                      hang_s=120)
    saved = [out.split("preempted: saved step ")[1].split(",")[0] if "preempted: saved" in out
             else None for _, out in stopped]
    assert [rc for rc, _ in stopped] == [143, 143] and saved[0] == saved[1], \
        "\n".join(f"exit {rc}: {o[-2000:]}" for rc, o in stopped)
    assert 3 < int(saved[0]) < 8
    resumed = _launch(tmp_path / "two", text, data_dir, 2, 4)
    assert all(rc == 0 and f"resumed from step {saved[0]}" in out for rc, out in resumed)
    want, got = losses_by_step(one_process), losses_by_step(tmp_path / "two")
    np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)],
                               rtol=1e-5)


@pytest.mark.slow
def test_a_corrupt_last_checkpoint_is_set_aside_and_both_processes_finish_the_run(
        tmp_path, text, data_dir, two_processes):
    """A copy of the finished two-process run with step 8's largest file damaged: both
    processes fall back to step 6 and train to 8 again, ending where they did (process 1
    used to keep step 8 in its list after process 0 moved it aside, and refused to save
    it: "already exists")."""
    from tests.test_checkpoint import flip_bit, largest_file
    workdir, _, resumed = two_processes
    assert [rc for rc, _ in resumed] == [0, 0]
    run = tmp_path / "copy"
    shutil.copytree(workdir, run)
    before = json.loads((run / "final_metrics.json").read_text())
    flip_bit(largest_file(run / "checkpoints" / "8" / "state"))
    again = _launch(run, text, data_dir, 2, 4)
    assert [rc for rc, _ in again] == [0, 0], "\n".join(o[-2000:] for _, o in again)
    assert all("resumed from step 6" in out for _, out in again)
    assert (run / "checkpoints" / "corrupt-8").is_dir()
    after = json.loads((run / "final_metrics.json").read_text())
    np.testing.assert_allclose(after["loss"], before["loss"], rtol=1e-6)


@pytest.mark.slow
def test_an_image_family_with_fsdp_params_samples_its_grid_on_every_process(tmp_path,
                                                                               data_dir):
    """The VAE's params sharded over both processes (fsdp): the eval grid's sampler is a
    collective, so both run it and process 0 writes the PNG (process 0 alone hung and
    aborted both)."""
    cmd = [sys.executable, "-m", "genjax.train", "--config=configs/vae_fmnist.py:tiny",
           f"--workdir={tmp_path}", "--config.mesh.data=1", "--config.mesh.fsdp=-1",
           "--config.total_steps=2", "--config.eval_every_steps=0",
           "--config.final_eval_batches=1", "--config.peer_timeout_s=30"]
    outs = _launch(tmp_path, None, data_dir, 2, 2, cmd=cmd)
    assert [rc for rc, _ in outs] == [0, 0], "\n".join(o[-2000:] for _, o in outs)
    assert (tmp_path / "samples" / "step_2.png").stat().st_size > 0


@pytest.mark.slow
def test_a_dead_peer_ends_the_survivor_non_zero_within_the_timeout(tmp_path, text, data_dir):
    """Process 1 is SIGKILLed at step 3; process 0, waiting for it in the next collective,
    must not hang: the coordination service misses its heartbeats for peer_timeout_s and
    terminates it (genjax/runtime.py)."""
    timeout_s = 10
    port, procs = _free_port(), []
    for i, faults in enumerate(["", "kill@3"]):
        env = subproc.env(4, GENJAX_DATA_DIR=data_dir, GENJAX_FAULTS=faults,
                          JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                          JAX_PROCESS_ID=str(i), GENJAX_INIT_TIMEOUT="60")
        cmd = _cmd(tmp_path, text, f"--config.peer_timeout_s={timeout_s}")
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    survivor, victim = procs
    try:
        victim.communicate(timeout=HANG_S)
        died = time.monotonic()
        out = survivor.communicate(timeout=timeout_s + 60)[0]
        waited = time.monotonic() - died
    except subprocess.TimeoutExpired:
        pytest.fail(f"the survivor hung: {timeout_s + 60} s after its peer died")
    finally:
        for p in procs:
            p.kill()
    assert victim.returncode == -9
    assert survivor.returncode != 0, out[-3000:]
    assert "step 8/8" not in out
    print(f"survivor exited {survivor.returncode} {waited:.1f} s after its peer died")
    # Measured on 2 busy cores: 6.5 s with peer_timeout_s=10; 53 s with JAX's defaults.
    assert waited < timeout_s + 20
