"""Process-level setup: multi-host initialisation, logging, version and provenance."""
from __future__ import annotations

import logging
import os

import jax

_initialized = False


def initialize_distributed() -> None:
    """`jax.distributed.initialize()` when launched as several processes.

    Triggered by JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID (any
    cluster), or by cluster auto-detection (Slurm, Cloud TPU pods) when
    GENJAX_DISTRIBUTED=1. A single process does nothing.
    """
    global _initialized
    if _initialized:
        return
    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS") and env.get("JAX_NUM_PROCESSES"):
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]),
            initialization_timeout=int(env.get("GENJAX_INIT_TIMEOUT", "300")))
    elif env.get("GENJAX_DISTRIBUTED") == "1":
        jax.distributed.initialize()
    _initialized = True


def setup_logging() -> None:
    logging.basicConfig(level=os.environ.get("GENJAX_LOG_LEVEL", "WARNING"),
                        format="%(levelname)s %(asctime)s %(name)s: %(message)s")
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def version() -> str:
    try:
        from importlib.metadata import version as v
        return v("genjax")
    except Exception:  # noqa: BLE001 - running from a source tree
        return "0+source"
