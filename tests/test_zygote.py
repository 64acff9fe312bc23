"""The tests' pre-imported server (tests/zygote.py) runs `python -m module` as a real
`python` would: the same output, exit code, environment, working directory, JAX devices
and exit handlers. Run as a module, this file is the probe both of them run."""
import atexit
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests import subproc, zygote

PROBE = [sys.executable, "-m", "tests.test_zygote"]


def both(*args, devices: int = 1, timeout: int = 120):
    """(forked, real) CompletedProcess of the probe with `args`."""
    env = subproc.env(devices, GENJAX_PROBE="from the environment")
    assert zygote.differences(env) == []
    return (zygote.run([*PROBE, *args], subproc.ROOT, env, timeout),
            subprocess.run([*PROBE, *args], cwd=subproc.ROOT, env=env, capture_output=True,
                           text=True, timeout=timeout))


def test_a_forked_run_sees_its_arguments_environment_folder_and_devices():
    forked, real = both("report", "--flag=1", devices=4)
    assert forked.returncode == real.returncode == 0, forked.stderr + real.stderr
    assert forked.stdout.splitlines()[1:] == real.stdout.splitlines()[1:] == ["atexit ran"]
    got, want = (json.loads(p.stdout.splitlines()[0]) for p in (forked, real))
    assert got.pop("parent") == zygote._Server.proc.pid  # it was forked
    want.pop("parent")
    assert got == want
    assert got["devices"] == 4 and got["argv"] == ["report", "--flag=1"]


@pytest.mark.parametrize("args,code", [(("exit", "3"), 3), (("exit", "0"), 0),
                                       (("raise",), 1), (("kill",), -signal.SIGKILL)])
def test_exit_codes_and_errors_are_a_real_processs(args, code):
    forked, real = both(*args)
    assert forked.returncode == real.returncode == code
    assert forked.stdout == real.stdout
    assert forked.stderr.splitlines()[-1:] == real.stderr.splitlines()[-1:]
    assert ("Traceback" in forked.stderr) == ("Traceback" in real.stderr)


def test_a_run_past_its_timeout_is_killed_and_raises():
    env = subproc.env()
    start = time.time()
    with pytest.raises(subprocess.TimeoutExpired):
        zygote.run([*PROBE, "sleep"], subproc.ROOT, env, timeout=2)
    assert time.time() - start < 60


def test_an_environment_the_imports_read_is_not_forked(monkeypatch):
    assert not zygote.usable(subproc.env(JAX_ENABLE_COMPILATION_CACHE="false"))
    assert zygote.usable(subproc.env(8, GENJAX_FAULTS="x", PYTEST_CURRENT_TEST="another"))
    # A variable the server's imports set (as tfds sets TF_CPP_MIN_LOG_LEVEL) may be missing
    # from a run's environment (a real python's imports would set it), not differ.
    base = subproc.env()
    monkeypatch.setattr(zygote._Server, "import_env", {**zygote._Server.import_env,
                                                       "SET_BY_IMPORTS": "1"})
    monkeypatch.setattr(zygote._Server, "set_by_imports",
                        zygote._Server.set_by_imports | {"SET_BY_IMPORTS"})
    assert zygote.usable({k: v for k, v in base.items() if k != "SET_BY_IMPORTS"})
    assert zygote.usable({**base, "SET_BY_IMPORTS": "1"})
    assert zygote.differences({**base, "SET_BY_IMPORTS": "2"}) == ["SET_BY_IMPORTS"]


def test_a_worker_whose_environment_changed_for_good_gets_a_new_server(monkeypatch):
    """A test or library may set a variable in the worker's os.environ for good (as
    genjax.aot sets ALLOW_MULTIPLE_LIBTPU_LOAD): its later runs are forked from a server
    started in that environment, not all sent to a real python."""
    zygote.usable(subproc.env())
    before = zygote._Server.proc.pid
    monkeypatch.setenv("GENJAX_ZYGOTE_UNRELATED", "1")  # GENJAX_*: read when used
    assert zygote.usable(subproc.env()) and zygote._Server.proc.pid == before
    monkeypatch.setenv("ZYGOTE_TEST_SET_FOR_GOOD", "1")
    forked, real = both("report")
    assert zygote._Server.proc.pid != before
    got, want = (json.loads(p.stdout.splitlines()[0]) for p in (forked, real))
    assert got["for_good"] == want["for_good"] == "1"


def _probe(command: str, *rest: str) -> None:
    atexit.register(print, "atexit ran", flush=True)
    if command == "report":
        import jax
        print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "name": __name__,
                          "env": os.environ.get("GENJAX_PROBE"),
                          "for_good": os.environ.get("ZYGOTE_TEST_SET_FOR_GOOD"),
                          "devices": jax.device_count(),
                          "parent": os.getppid(), "path0": sys.path[0]}))
    elif command == "exit":
        sys.exit(int(rest[0]))
    elif command == "raise":
        raise ValueError("the probe's error")
    elif command == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif command == "sleep":
        time.sleep(600)


if __name__ == "__main__":
    _probe(*sys.argv[1:])
