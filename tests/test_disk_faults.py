"""Real disk faults during a checkpoint save, through the train CLI: the
checkpoint directory is a small tmpfs that the test fills up or remounts read-only after
the first save. The run stops with one `error:` line naming the step and exit code 1; the
previous checkpoint stays intact and a rerun resumes from it. Needs root (mount)."""
import errno
import os
import subprocess

import pytest

from genjax import checkpoint as ckpt_lib
from genjax import cli, train
from tests import subproc
from tests.families import tiny_config

# Checkpoints at steps 3 and 6; the fault strikes between them.
OVERRIDES = {"total_steps": 6, "ckpt_every_steps": 3, "log_every_steps": 3,
             "eval_every_steps": 0, "final_eval_batches": 1, "model.vocab_size": 0}


def _mount(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture
def small_disk(tmp_path):
    """W/checkpoints on its own 16 MiB tmpfs; yields W. Unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "W" / "checkpoints"
    disk.mkdir(parents=True)
    done = _mount(["-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)])
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield tmp_path / "W"
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _fill(directory) -> None:
    """Writes a file into `directory` until its filesystem is full (ENOSPC)."""
    chunk = b"\0" * (1 << 20)
    with open(os.path.join(directory, "filler"), "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    with pytest.raises(OSError):  # really full: not even one more small file
        with open(os.path.join(directory, "one_more"), "wb", buffering=0) as g:
            g.write(chunk)


def _remount_read_only(directory) -> None:
    done = _mount(["-o", "remount,ro", str(directory)])
    assert done.returncode == 0, done.stderr


FAULTS = {"disk_full": (_fill, lambda d: os.remove(os.path.join(d, "filler"))),
          "read_only": (_remount_read_only, lambda d: _mount(["-o", "remount,rw", str(d)]))}


def _failing_run(fault: str, workdir: str) -> None:
    """The train CLI (genjax.cli.run) on `workdir` whose disk fails after step 3's
    save; run in a subprocess (`python -m tests.test_disk_faults FAULT W`): a failed
    orbax save leaves writer threads behind, and the CLI's exit must not wait for them."""
    real_save = ckpt_lib.Checkpointer.save

    def save(self, step, *args, **kwargs):
        if step == 6:  # step 3 is on disk (finished); then the disk fails
            self.wait()
            FAULTS[fault][0](os.path.join(workdir, "checkpoints"))
        return real_save(self, step, *args, **kwargs)

    ckpt_lib.Checkpointer.save = save
    cli.run(lambda rest: train.train(tiny_config("lm", **OVERRIDES), workdir),
            argv=["train"])


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_failed_save_is_one_error_line_and_the_previous_checkpoint_resumes(
        fault, small_disk, data_dir, capsys):
    failed = subproc.run_module("tests.test_disk_faults", fault, small_disk, timeout=120,
                                env_extra={"GENJAX_DATA_DIR": data_dir})
    assert failed.returncode == 1, failed.stderr[-3000:]
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "checkpoint step 6" in errors[0], failed.stderr[-3000:]
    assert ckpt_lib.Checkpointer(str(small_disk), read_only=True).all_steps() == [3]

    FAULTS[fault][1](small_disk / "checkpoints")  # repaired: the run resumes from step 3
    train.train(tiny_config("lm", **OVERRIDES), str(small_disk))  # restore checks checksums
    assert "resumed from step 3\n" in capsys.readouterr().out
    assert ckpt_lib.Checkpointer(str(small_disk), read_only=True).all_steps() == [3, 6]


if __name__ == "__main__":
    import sys
    _failing_run(*sys.argv[1:])
