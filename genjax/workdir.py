"""Workdir safety and provenance: one live run per workdir, and what produced it."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from importlib import metadata

import jax

from genjax import checkpoint as ckpt_lib
from genjax.errors import UserError, warn

LOCK_NAME = ".lock"
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain",
            "tensorflow-datasets", "ml_collections", "numpy", "genjax")


def make_workdir(path: str, flag: str = "--workdir") -> str:
    """The absolute `path` (given as `flag`), made if missing; UserError for a file or a
    folder that cannot be made (permissions, read-only disk), before anything is written."""
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag}={path!r} is a file, not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"{flag}={path!r} cannot be made: {e.strerror or e}") from None
    return path


def remove_empty_workdir(path: str, made: bool) -> None:
    """Removes an empty `path/checkpoints/`, and `path` itself if this run `made` it and
    nothing else is in it: what a run that failed in its setup leaves. Anything else stays."""
    for folder in [os.path.join(path, "checkpoints")] + ([path] if made else []):
        try:
            os.rmdir(folder)
        except OSError:  # not empty, or gone: keep everything
            pass


def make_parent(path: str, flag: str = "--out") -> str:
    """Makes the folder `path` (given as `flag`) will be written into; UserError, one line,
    where a file stands in its way or it cannot be made. Returns `path`."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{flag}={path!r}: a file stands where its folder should be") from None
    except OSError as e:
        raise UserError(f"{flag}={path!r}: its folder cannot be made: {e.strerror or e}") from None
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkdirLock:
    """`W/.lock` holds the owner's host and pid; a live owner refuses a second run.

    A lock left by a dead process on this host is taken over (with a warning). Only
    process 0 of a multi-process run takes the lock.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_NAME)
        self.held = False

    def acquire(self) -> "WorkdirLock":
        if jax.process_index() != 0:
            return self
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    with open(self.path) as f:
                        owner = json.load(f)
                except (OSError, ValueError):
                    owner = {}
                same_host = owner.get("host") == me["host"]
                if same_host and owner.get("pid") and _alive(int(owner["pid"])):
                    raise UserError(f"another run (pid {owner['pid']}) is using "
                                    f"{os.path.dirname(self.path)}; wait for it or pick "
                                    f"another --workdir") from None
                if not same_host and owner.get("host"):
                    raise UserError(f"{self.path} is held by host {owner['host']} "
                                    f"(pid {owner.get('pid')}); delete it if that run is dead")
                warn(f"taking over a stale lock {self.path} ({owner})")
                os.unlink(self.path)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise UserError(f"cannot take the lock {self.path}")

    def release(self) -> None:
        if self.held:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.held = False


def git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_run_meta(workdir: str, config_dict: dict, mesh) -> dict:
    """W/run_meta.json: config, commit, versions, devices, mesh, XLA flags, seed."""
    meta = {
        "config": config_dict, "git_commit": git_commit(), "versions": versions(),
        "devices": {"count": jax.device_count(), "kind": jax.devices()[0].device_kind,
                    "platform": jax.default_backend(), "processes": jax.process_count()},
        "mesh": {k: int(v) for k, v in mesh.shape.items()},
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "seed": config_dict.get("seed"),
        "argv": sys.argv, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "run_meta.json"), "w") as f:
            json.dump(meta, f, indent=2)
    return meta


def refuse_nonempty(out: str, flag: str = "--out") -> None:
    """A tool's output folder (given as `flag`) must be new or empty: UserError otherwise."""
    if not str(out).strip():
        raise UserError(f"{flag} is empty; name a new folder")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"{flag}={out!r} is a file; choose a new folder")
    if os.path.exists(out) and os.listdir(out):
        raise UserError(f"{flag}={out!r} exists and is not empty; choose a new folder")


def write_run(out: str, step: int, state, data_state, meta: dict, config: dict) -> None:
    """A run folder `out` holding one finished checkpoint `step` and its config.json: what
    the workdir -> workdir tools write (genjax.lora merge, genjax.quantize,
    genjax.scan_convert), so genjax.sample / evaluate / train read it like any run."""
    make_workdir(out, "--out")
    dst = ckpt_lib.Checkpointer(out, async_save=False)
    dst.save(step, state, data_state, dict(meta, config=config))
    dst.close()
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
