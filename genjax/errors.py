"""Errors and exit codes of every genjax command (the bottom module: imports no genjax module).

The command-line runner (genjax/cli.py) prints these as one `error:` line:
  UserError, ConfigError   bad input (flags, config, data, workdir)       exit 2
  CheckpointError          a checkpoint could not be written or read      exit 1
  NonFinite                training went bad (NaN/Inf, too many skips)    exit 1
  Preempted                SIGTERM: checkpointed, asks to be requeued     exit 143
"""
from __future__ import annotations

import errno
import logging
import re
import sys

EXIT_USER = 2
EXIT_FAILED = 1
EXIT_PREEMPTED = 143  # 128 + SIGTERM: schedulers (Slurm, k8s) read it as "requeue me"


class UserError(Exception):
    """Bad input from the user (missing data, bad prompt, wrong workdir): one line, exit 2."""


class ConfigError(ValueError):
    """A bad config: printed as one line by the CLIs, exit code 2."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read (one line on the CLI, exit 1)."""


class CorruptCheckpoint(CheckpointError):
    """A checkpoint step that cannot be read or fails its checksums."""


class NonFinite(FloatingPointError):
    """Training went bad at steps [first, last] (one line on the CLI, exit 1)."""

    def __init__(self, message: str, first: int, last: int):
        super().__init__(message)
        self.first, self.last = int(first), int(last)


class Preempted(SystemExit):
    """Raised after the SIGTERM checkpoint: the process exits with EXIT_PREEMPTED."""

    def __init__(self):
        super().__init__(EXIT_PREEMPTED)


# What the machine did, not bad input or bad files: out of host or device memory, a
# permission, no space or file handles.
_MACHINE_ERRNOS = {errno.ENOMEM, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EMFILE,
                   errno.ENFILE}
_MACHINE_TEXTS = ("RESOURCE_EXHAUSTED", "out of memory", "Out of memory")


def machine_failure(e: BaseException) -> BaseException | None:
    """The exception in `e` or what it was raised from that is the machine's failure."""
    for _ in range(16):
        if e is None:
            return None
        oserror = isinstance(e, OSError) and e.errno in _MACHINE_ERRNOS
        if isinstance(e, MemoryError) or oserror or any(t in str(e) for t in _MACHINE_TEXTS):
            return e
        e = e.__cause__ or e.__context__
    return None


def warn(msg: str) -> None:
    """One `warning: <msg>` line on stdout, where genjax prints its progress. A program
    whose absl log goes to a file (`absl.logging.get_absl_handler().use_absl_log_file()`)
    gets it there too; a log on the terminal does not: the terminal shows it once."""
    print(f"warning: {msg}", flush=True)
    try:
        from absl import logging as absl_logging
        stream = absl_logging.get_absl_handler().python_handler.stream
    except Exception:  # noqa: BLE001  (no absl: nothing logs to a file)
        return
    if stream not in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        logging.warning(msg)


def short_reason(e: BaseException, limit: int = 400) -> str:
    """`e` as a reason for one error line: its type and first line, without what
    TensorStore appends (its spec as JSON, source locations, bound-method reprs), at most
    `limit` characters."""
    text = str(e).splitlines()[0] if str(e) else ""
    text = re.sub(r"\s*\[(tensorstore_spec|source locations)=.*$", "", text)
    text = re.sub(r"<bound method [^>]*>", "", text).strip()
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
