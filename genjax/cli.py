"""The command-line runner of every `python -m genjax.<tool>` (the top of the package).

Parses absl flags (config errors become one line), runs `main(argv)`, and turns the
errors of genjax/errors.py into one `error:` line and their exit codes.
"""
from __future__ import annotations

import logging
import os
import re
import sys
from typing import Sequence

from ml_collections import ConfigDict

from genjax import runtime
from genjax.errors import (EXIT_FAILED, EXIT_USER, CheckpointError, ConfigError, UserError)


def parse_flags(argv: Sequence[str], flag_values=None):
    """absl flag parsing (of `flag_values`, default the global FLAGS) with config errors
    turned into one ConfigError line."""
    from absl import flags
    flag_values = flags.FLAGS if flag_values is None else flag_values
    try:
        rest = flag_values(list(argv))
    except (AttributeError, KeyError) as e:  # locked ConfigDict: unknown key
        raise ConfigError(unknown_key_message(e, argv)) from None
    except flags.Error as e:
        raise ConfigError(one_line(str(e))) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad config override: {e}") from None
    cfg = getattr(flag_values, "config", None)
    if cfg is not None and not isinstance(cfg, (ConfigDict, str)):  # str: a plain flag
        try:  # ml_collections defers load errors into an _ErrorConfig object
            cfg.lock()
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"cannot load --config: {one_line(str(e))}") from None
    return rest


def one_line(message: str) -> str:
    """A multi-line flag error as one line: its `flag --name=value` (if it starts so) and
    its last line, which is the reason (the exception a config file's get_config raised,
    the OS error under ml_collections' load report); genjax errors lose their module path."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(lines) < 2:
        return message.strip()
    reason = re.sub(r"^genjax\.errors\.\w+: ", "", lines[-1])
    flag = re.match(r"(flag --\S+): ", lines[0])
    return f"{flag.group(1)}: {reason}" if flag else reason


def unknown_key_message(error: BaseException, argv: Sequence[str]) -> str:
    """One line for a locked ConfigDict's unknown-key error: the override as typed and
    ml_collections' suggestion, without the nested reprs its exception carries."""
    text = error.args[0] if error.args else str(error)
    while isinstance(text, BaseException):  # AttributeError(KeyError(msg))
        text = text.args[0] if text.args else str(text)
    text = str(text)
    key = re.search(r'Key "([^"]+)"', text)
    key = key.group(1) if key else text.splitlines()[0].strip("'\" ")
    typed = [a.split("=", 1)[0] for a in argv if a.startswith("--config.")]
    path = next((t for t in typed if key in t.split(".")[1:]), key)
    guess = re.search(r'Did you mean "([^"]+)"', text)
    hint = ""
    if guess:
        parts = path.split(".")
        at = parts.index(key) if key in parts else len(parts) - 1
        hint = f"; did you mean {'.'.join(parts[:at] + [guess.group(1)])}?"
    return (f"unknown config key {path}{hint} (see genjax/config_lib.py and the config "
            f"file for the keys that exist)")


HELP = ("-h", "--help", "--helpfull", "-?")
_NOT_OURS = ("absl", "orbax", "jax", "ml_collections")  # modules whose flags help leaves out


def help_text(main, flag_values=None) -> str:
    """`main`'s module docstring and the flags its module defined (not absl's logging
    flags nor orbax's), each with its help and default."""
    from absl import flags
    flag_values = flags.FLAGS if flag_values is None else flag_values
    doc = (sys.modules[main.__module__].__doc__ or "").strip()
    own = {f.name: f for module, fs in flag_values.flags_by_module_dict().items()
           if not module.startswith(_NOT_OURS) for f in fs}
    lines = [doc, ""] if doc else []
    lines.append("flags:")
    for name, f in sorted(own.items()):
        default = "" if f.default is None else f" (default: {f.default_as_str})"
        lines.append(f"  --{name}: {f.help}{default}")
    if "config" in own:
        lines.append("  --config.<key>=<value>: any key of the config file (genjax/config_lib.py "
                     "comments the shared ones)")
    return "\n".join(lines)


def run(main, argv=None, *, tpu_compiler: bool = False, multi_process: bool = False) -> None:
    """Runs `main(argv)` after flag parsing; without `tpu_compiler` (genjax.aot), JAX
    does not load libtpu on a machine without TPUs (runtime.skip_tpu_without_tpus).
    Without `multi_process` (all but genjax.train) a launch of several processes is
    refused (runtime.refuse_multi_process_launch).

    -h / --help -> the module's docstring and flags on stdout, exit 0. Bad input -> one
    `error:` line on stderr, exit 2; a run that fails for a reason it can name (failed
    checkpoint save, NaN halt) -> one line, exit 1.
    """
    argv = sys.argv if argv is None else argv
    if set(argv[1:]) & set(HELP):
        print(help_text(main))
        sys.exit(0)
    if not tpu_compiler:
        runtime.skip_tpu_without_tpus()
    try:
        if not multi_process:
            runtime.refuse_multi_process_launch(tool_name(main))
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


def tool_name(main) -> str:
    """`genjax.sample` for the main of `python -m genjax.sample` (whose module is __main__)."""
    module = sys.modules.get(main.__module__)
    spec = getattr(module, "__spec__", None)
    name = spec.name if spec is not None else main.__module__
    return name.removesuffix(".__main__")


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
