"""Process-level setup: multi-host initialisation, logging, version and provenance."""
from __future__ import annotations

import glob
import importlib.util
import logging
import os

import jax

from genjax.errors import UserError

_initialized = False


def initialize_distributed(peer_timeout_s: int = 120) -> None:
    """`jax.distributed.initialize()` when launched as several processes.

    Triggered by JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID (any
    cluster), or by cluster auto-detection (Slurm, Cloud TPU pods) when
    GENJAX_DISTRIBUTED=1. A single process does nothing.

    A dead peer: the coordination service stops hearing its heartbeats and, after
    `peer_timeout_s` seconds, every other process is terminated (non-zero exit) instead
    of waiting forever in a collective; a process that exits waits at most as long for
    the others. GENJAX_INIT_TIMEOUT bounds the wait for all processes to start.
    """
    global _initialized
    if _initialized:
        return
    env = os.environ
    init_timeout = env.get("GENJAX_INIT_TIMEOUT", "300")
    if not init_timeout.isdigit() or int(init_timeout) < 1:
        raise UserError(f"GENJAX_INIT_TIMEOUT={init_timeout!r}: seconds, an integer >= 1")
    timeouts = dict(initialization_timeout=int(init_timeout),
                    heartbeat_timeout_seconds=int(peer_timeout_s),
                    shutdown_timeout_seconds=int(peer_timeout_s))
    if env.get("JAX_COORDINATOR_ADDRESS") and env.get("JAX_NUM_PROCESSES"):
        check_launch_env(env)
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]), **timeouts)
    elif env.get("GENJAX_DISTRIBUTED") == "1":
        jax.distributed.initialize(**timeouts)
    _initialized = True


def refuse_multi_process_launch(tool: str, env=None) -> None:
    """UserError (one line) when `tool`, a one-process tool (everything but genjax.train),
    is started by a launch of several processes (JAX_NUM_PROCESSES > 1 or
    GENJAX_DISTRIBUTED=1): it would never join them, so every process would compute the
    same thing and write the same files."""
    env = os.environ if env is None else env
    n = env.get("JAX_NUM_PROCESSES", "")
    why = ("GENJAX_DISTRIBUTED=1" if env.get("GENJAX_DISTRIBUTED") == "1" else
           f"JAX_NUM_PROCESSES={n}" if n.isdigit() and int(n) > 1 else "")
    if why:
        raise UserError(f"{tool} runs as one process and this is a launch of several ({why}): "
                        f"run it once, on one host, without the launcher's environment "
                        f"(experiments/launch/tpu_vm.sh --worker=0)")


def check_launch_env(env) -> None:
    """UserError (one line) unless JAX_NUM_PROCESSES = n >= 1, JAX_PROCESS_ID in 0..n-1 and
    JAX_COORDINATOR_ADDRESS = host:port."""
    n, i = env.get("JAX_NUM_PROCESSES", ""), env.get("JAX_PROCESS_ID", "")
    bad = [f"{k}={env.get(k)!r}" for k, v in (("JAX_NUM_PROCESSES", n), ("JAX_PROCESS_ID", i))
           if not v.isdigit()]
    if not bad and int(n) < 1:
        bad = [f"JAX_NUM_PROCESSES={n!r}"]
    if not bad and int(i) >= int(n):
        bad = [f"JAX_PROCESS_ID={i!r} with JAX_NUM_PROCESSES={n!r}"]
    if bad:
        raise UserError(f"multi-process launch: {', '.join(bad)}; set JAX_NUM_PROCESSES (n >= 1) "
                        f"and JAX_PROCESS_ID (0..n-1) to integers with JAX_COORDINATOR_ADDRESS")
    host, _, port = env["JAX_COORDINATOR_ADDRESS"].rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"JAX_COORDINATOR_ADDRESS={env['JAX_COORDINATOR_ADDRESS']!r}: give "
                        f"host:port (process 0's address and a free port)")


def skip_tpu_without_tpus() -> None:
    """Keeps JAX from loading libtpu on a machine without TPU chips.

    With libtpu installed (the tpu-aot extra) and JAX_PLATFORMS unset, JAX's first device
    query initialises every platform it knows, libtpu included, which prints
    `E0000 ... unexpected worker hostname` on a machine without TPUs. Only genjax.aot
    needs libtpu there (as a compiler; it loads it itself). Without TPU chips (no
    /dev/accel*, /dev/vfio/N), this sets JAX's platforms to cuda (which JAX skips
    without a visible GPU) and cpu; a ROCm plugin or a set JAX_PLATFORMS is left alone.
    Call before the first device query."""
    if os.environ.get("JAX_PLATFORMS") or importlib.util.find_spec("libtpu") is None:
        return
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
        return  # TPU chips: JAX should find them
    if any(importlib.util.find_spec(f"jax_rocm{v}_plugin") for v in ("60", "7")):
        return
    jax.config.update("jax_platforms", "cuda,cpu")


class _DropAbslNotices(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_absl_notices(prefixes: tuple[str, ...]) -> None:
    """Drops the records of absl's logger (where orbax and TFDS log) that start with one of
    `prefixes`: notices about genjax's own choices. Once per process and tuple."""
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _DropAbslNotices) and f.prefixes == tuple(prefixes)
               for f in absl_logger.filters):
        absl_logger.addFilter(_DropAbslNotices(prefixes))


def request_deterministic_ops() -> None:
    """config.deterministic: adds --xla_gpu_deterministic_ops=true to XLA_FLAGS (read when
    the backend starts, so call it first; run_meta.json records XLA_FLAGS). CPU is
    deterministic already; on GPU this costs speed (scatter/reductions)."""
    flag = "--xla_gpu_deterministic_ops=true"
    flags = os.environ.get("XLA_FLAGS", "").split()
    if flag not in flags:
        os.environ["XLA_FLAGS"] = " ".join([*flags, flag])


def setup_logging() -> None:
    """Python logging at $GENJAX_LOG_LEVEL (default WARNING; INFO adds resume and data
    notes, DEBUG sharding decisions); another name is one UserError line."""
    name = os.environ.get("GENJAX_LOG_LEVEL", "WARNING")
    level = logging.getLevelName(name.upper())
    if not isinstance(level, int):
        raise UserError(f"GENJAX_LOG_LEVEL={name!r}: use DEBUG, INFO, WARNING, ERROR or "
                        f"CRITICAL")
    logging.basicConfig(level=level, format="%(levelname)s %(asctime)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)  # basicConfig does nothing once a handler exists
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def available_host_bytes() -> int | None:
    """Host memory available to a new allocation now (Linux MemAvailable), None elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def version() -> str:
    try:
        from importlib.metadata import version as v
        return v("genjax")
    except Exception:  # noqa: BLE001 - running from a source tree
        return "0+source"
