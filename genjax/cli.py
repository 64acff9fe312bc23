"""The command-line runner of every `python -m genjax.<tool>` (the top of the package).

Parses absl flags (config errors become one line), runs `main(argv)`, and turns the
errors of genjax/errors.py into one `error:` line and their exit codes.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Sequence

from ml_collections import ConfigDict

from genjax import runtime
from genjax.errors import (EXIT_FAILED, EXIT_USER, CheckpointError, ConfigError, UserError)


def parse_flags(argv: Sequence[str]):
    """absl flag parsing with config errors turned into one ConfigError line."""
    from absl import flags
    try:
        rest = flags.FLAGS(list(argv))
    except AttributeError as e:  # locked ConfigDict: unknown key
        key = str(e).strip("'\"")
        raise ConfigError(f"unknown config key {key!r} (see genjax/config_lib.py and the "
                          f"config file for the keys that exist)") from None
    except KeyError as e:
        raise ConfigError(f"unknown config key {e}") from None
    except flags.Error as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad config override: {e}") from None
    cfg = getattr(flags.FLAGS, "config", None)
    if cfg is not None and not isinstance(cfg, ConfigDict):
        try:  # ml_collections defers load errors into an _ErrorConfig object
            cfg.lock()
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"cannot load --config: {e}") from None
    return rest


def run(main, argv=None, *, tpu_compiler: bool = False) -> None:
    """Runs `main(argv)` after flag parsing; without `tpu_compiler` (genjax.aot), JAX
    does not load libtpu on a machine without TPUs (runtime.skip_tpu_without_tpus).

    Bad input -> one `error:` line on stderr, exit 2; a run that fails for a reason it
    can name (failed checkpoint save, NaN halt) -> one line, exit 1.
    """
    argv = sys.argv if argv is None else argv
    if not tpu_compiler:
        runtime.skip_tpu_without_tpus()
    try:
        rest = parse_flags(argv)
        main(rest)
    except (ConfigError, UserError) as e:
        print(f"error: {e}", file=sys.stderr)
        logging.shutdown()
        sys.exit(EXIT_USER)
    except (CheckpointError, FloatingPointError) as e:
        # One write, starting a fresh line: orbax's dying writer threads may be printing
        # tracebacks piecewise, and print() would let them split or prefix the error line.
        sys.stderr.write(f"\nerror: {e}\n")
        logging.shutdown()
        _exit_now_if_threads_hang(EXIT_FAILED)
        sys.exit(EXIT_FAILED)


def _exit_now_if_threads_hang(code: int) -> None:
    """os._exit(code) if non-daemon threads are still running: after a failed save,
    orbax's writer threads wait minutes for a signal that never comes (orbax 0.12: its
    coordination timeout), and sys.exit would wait for them."""
    import threading
    if any(t is not threading.main_thread() and not t.daemon and t.is_alive()
           for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
