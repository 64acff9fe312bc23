"""A pre-imported Python for the tests' command-line runs: `python -m module args` in a
child forked from a server that has imported jax, flax, orbax, grain, tfds... once.

Each `python -m genjax.train ...` of the suite spent ~4-5 s of one core importing the
same libraries before doing anything (jax alone ~2.4 s). Here a server per pytest worker
imports them once (no JAX backend started, no genjax command module imported) and forks a
child per run. The child is still a process of its own: it takes the run's environment,
working directory, stdout/stderr files and arguments, starts JAX's backend from that
environment (XLA_FLAGS, fake device count), runs the module as `__main__` through
`runpy` the way `python -m` does, and exits through the interpreter's normal exit
(atexit, flushes). The exit code comes back as subprocess.run's would (-N: signal N).

Not forked (a real `python` instead; `usable`, `differences`):
  - a run whose environment differs from the server's in anything but XLA_FLAGS (read
    when JAX's backend starts), GENJAX_* (read when used) and PYTEST_* (pytest's own
    PYTEST_CURRENT_TEST changes with every test): JAX and other libraries
    read theirs when imported, which the child no longer is (JAX_ENABLE_COMPILATION_CACHE);
    A variable the imports set (TF_CPP_MIN_LOG_LEVEL, TPU_SKIP_MDS_QUERY) may be missing
    from a run's environment (its pytest worker had not imported them yet): the child
    gets the imports' value, as a real python would;
  - everything when GENJAX_TEST_FORK=0 (debugging; the suite's result must not change).
The server follows its worker's own environment: when a test or library changes that for
good (os.environ), the next run starts a new server (`_running`).
Tests of starting up itself (imports, `--help`, signals sent from outside, several
processes of one job) launch real processes on their own and do not come here.

Protocol (a Unix socket per server): the client sends one JSON request and three file
descriptors (stdin, stdout, stderr); the server forks, replies {"pid"}, waits for the
child and replies {"status"} (os.waitpid's). Server: `python -m tests.zygote SOCKET`.
"""
import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENABLED = os.environ.get("GENJAX_TEST_FORK", "1") != "0"
# The libraries genjax's commands import, then every genjax module but the commands
# (`_preload`): a command module is not, as the child runs it as __main__ and a second
# copy under its own name would differ from `python -m`.
LIBRARIES = ("numpy", "jax", "jax.numpy", "flax.linen", "optax", "orbax.checkpoint",
             "grain", "tensorflow_datasets", "ml_collections.config_flags", "absl.app")
_MAX_MSG = 1 << 20


# ----------------------------------------------------------------------------- client
class _Server:
    """This process's server: started on first use, stopped when this process exits."""
    proc: subprocess.Popen | None = None
    path: str = ""
    base_env: dict = {}  # the environment it started in (the part _import_env keeps)
    import_env: dict = {}  # its environment once it had imported everything
    set_by_imports: frozenset = frozenset()  # the variables its imports set (absl, tfds)


def _import_env(env: dict) -> dict:
    """The part of `env` that the server's imports may have read."""
    return {k: v for k, v in env.items()
            if k != "XLA_FLAGS" and not k.startswith(("GENJAX_", "PYTEST_"))}


def usable(env: dict) -> bool:
    """Whether a run with environment `env` may be forked (see the module docstring)."""
    return ENABLED and not differences(env)


def differences(env: dict) -> list[str]:
    """The variables that keep a run with environment `env` from being forked: those the
    server's imports may have read with another value ([]: it may be forked)."""
    _running()
    got, want = _import_env(env), _Server.import_env
    # a variable the imports set may be missing: a real python's imports would set it
    return sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k)
                  and (k in got or k not in _Server.set_by_imports))


def _running() -> None:
    """Starts the server in the tests' base environment (tests/subproc.py: env()) unless
    it runs in this one: a test or library that changed this process's environment for
    good (os.environ) gets a new server rather than no more forks."""
    from tests import subproc
    env = subproc.env()
    if _Server.proc is not None and _Server.proc.poll() is None:
        if _import_env(env) == _Server.base_env:
            return
        _stop()
    folder = tempfile.mkdtemp(prefix="genjax-zygote-")
    path = os.path.join(folder, "socket")
    proc = subprocess.Popen([sys.executable, "-m", "tests.zygote", path], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    line = proc.stdout.readline()  # "ready <its environments>", once it listens
    if not line.startswith(b"ready "):
        proc.kill()
        raise RuntimeError(f"tests/zygote.py: the server did not start ({line[:200]!r})")
    ready = json.loads(line[len(b"ready "):])
    if _Server.proc is None:
        atexit.register(_stop)
    _Server.proc, _Server.path, _Server.base_env = proc, path, _import_env(env)
    _Server.import_env = _import_env(ready["env"])
    _Server.set_by_imports = frozenset(ready["set_by_imports"])


def _stop() -> None:
    if _Server.proc is not None and _Server.proc.poll() is None:
        _Server.proc.terminate()
        _Server.proc.wait(timeout=30)
    if _Server.proc is not None:
        _Server.proc.stdout.close()
    shutil.rmtree(os.path.dirname(_Server.path), ignore_errors=True)


def run(argv: list[str], cwd: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """subprocess.run(argv, cwd, env, capture_output=True, text=True, timeout) for
    argv = [sys.executable, "-m", module, *args], in a forked child. Raises
    subprocess.TimeoutExpired after killing the child, as subprocess.run does."""
    if argv[:2] != [sys.executable, "-m"]:
        raise ValueError(f"tests/zygote.py runs `python -m module ...`, not {argv[:3]}")
    _running()
    request = {"module": argv[2], "args": argv[3:], "cwd": cwd, "env": env}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            open(os.devnull, "rb") as devnull, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(_Server.path)
        socket.send_fds(conn, [json.dumps(request).encode()],
                        [devnull.fileno(), out.fileno(), err.fileno()])
        lines = _Lines(conn)
        pid = lines.next()["pid"]
        conn.settimeout(timeout)
        try:
            status = lines.next()["status"]
        except (TimeoutError, socket.timeout):
            os.kill(pid, 9)
            conn.settimeout(None)
            lines.next()
            raise subprocess.TimeoutExpired(argv, timeout, _read(out), _read(err)) from None
        return subprocess.CompletedProcess(argv, os.waitstatus_to_exitcode(status),
                                           _read(out), _read(err))


class _Lines:
    """The server's replies: one JSON object per line."""

    def __init__(self, conn):
        self.conn, self.buffer = conn, b""

    def next(self) -> dict:
        while b"\n" not in self.buffer:
            chunk = self.conn.recv(4096)
            if not chunk:
                raise RuntimeError("tests/zygote.py: the server closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


def _read(file) -> str:
    file.seek(0)
    return file.read().decode(errors="replace")


# ----------------------------------------------------------------------------- server
def _child(request: dict, fds: list[int]) -> None:
    """In the forked child: become `python -m module args` and exit as it would."""
    import runpy
    import traceback

    import numpy as np
    for fd, target in zip(fds, (0, 1, 2)):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update({**request["set_by_imports"], **request["env"]})
    os.chdir(request["cwd"])
    sys.path[0] = request["cwd"]  # `python -m` puts the working directory first
    np.random.seed()  # a fresh process seeds numpy's global generator from the OS
    sys.argv = [request["module"], *request["args"]]
    code = 0
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code
    except BaseException:  # noqa: BLE001 - what the interpreter would print
        traceback.print_exc()
        code = 1
    raise SystemExit(code)


def _preload() -> None:
    """Imports LIBRARIES and genjax's modules that are no command (no `__main__` guard);
    JAX's backend stays unstarted (the child starts it from its own XLA_FLAGS)."""
    import importlib
    import importlib.util
    import pkgutil

    from jax._src import xla_bridge
    for name in LIBRARIES:
        importlib.import_module(name)
    import genjax
    for info in pkgutil.walk_packages(genjax.__path__, "genjax."):
        spec = importlib.util.find_spec(info.name)
        source = Path(spec.origin).read_text() if spec and spec.origin.endswith(".py") else ""
        if info.name.endswith("__main__") or '__name__ == "__main__"' in source:
            continue
        try:
            importlib.import_module(info.name)
        except ImportError:
            pass  # an optional dependency (torch...): the child imports it if it can
    if xla_bridge.backends_are_initialized():
        raise RuntimeError("tests/zygote.py: importing genjax started JAX's backend")


def _fork() -> int:
    """os.fork(), without Python 3.12's warning about a multi-threaded parent (numpy's
    OpenBLAS thread, idle here); the child leaves with the warning filters it had."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "This process", DeprecationWarning)
        return os.fork()


def serve(path: str) -> None:
    """Imports what every command imports (`_preload`), listens on `path`, forks a child
    per request; ends when its parent (the pytest worker) is gone."""
    before = dict(os.environ)
    _preload()
    set_by_imports = {k: v for k, v in os.environ.items() if k not in before}
    parent, me = os.getppid(), os.getpid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    listener.settimeout(1.0)
    ready = {"env": dict(os.environ), "set_by_imports": set_by_imports}
    sys.stdout.write("ready " + json.dumps(ready) + "\n")
    sys.stdout.flush()
    while os.getppid() == parent:
        try:
            conn, _ = listener.accept()
        except (TimeoutError, socket.timeout):
            continue
        conn.settimeout(None)
        message, fds, _, _ = socket.recv_fds(conn, _MAX_MSG, 3)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = _fork()
        if pid == 0:
            listener.close()
            conn.close()
            _child({**json.loads(message), "set_by_imports": set_by_imports}, fds)
        for fd in fds:
            os.close(fd)
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        _, status = os.waitpid(pid, 0)
        try:
            conn.sendall(json.dumps({"status": status}).encode() + b"\n")
        except OSError:
            pass  # the client went away
        conn.close()
    if os.getpid() == me:
        listener.close()
        os.unlink(path)


if __name__ == "__main__":
    serve(sys.argv[1])
