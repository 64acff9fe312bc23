r"""Runs a sweep defined next to its config: expand, then run locally, resume, or print.

  python -m experiments.sweep --config=configs/lm_shakespeare.py:tiny --sweep=norm \
      --root=runs/sweeps --seeds=2 --parallel=2
  python -m experiments.sweep --config=configs/lm_shakespeare.py:tiny --seeds=3  # no sweep:
                                                     # the config itself, over 3 seeds
  python -m experiments.sweep ... --dry_run          # list the runs and their status only
  python -m experiments.sweep ... --emit=commands    # one launch line per unfinished run
  python -m experiments.collect runs/sweeps          # tables and learning curves

The config file's `get_sweep(add, arg)` receives the --sweep name as `arg` (see
genjax/sweep_lib.py). Each run is `python -m genjax.train --config=<same file:preset>
<common overrides> --config.<k>=<v>... --config.seed=S --workdir=W` with a readable workdir

  W = <root>/<config file stem>.<preset>/<k=v,...>/seed=<S>

and its output in W/train.log. `--config.<key>=<value>` given to the sweep applies to every
run (recorded in <root>/<config>/<sweep>.sweep.json, the manifest collect reads; they are
not part of the directory names, so use another --root when you change them).

Re-running the same command is always safe: finished runs (W/final_metrics.json) are
skipped, interrupted ones resume from their checkpoints (genjax.train resumes any workdir).
SIGTERM or Ctrl-C: every running child gets SIGTERM, checkpoints at its next step and
exits 143; so does a child whose sweep process dies (Linux). Exit code: 0 when every run
finished, 1 if one failed, 143 when interrupted or a run was (a child preempted on its own).
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Any

from genjax import sweep_lib

EXIT_PREEMPTED = 143
MANIFEST_SUFFIX = ".sweep.json"


# ---------------------------------------------------------------------- expansion
def load_config_module(path: str):
    """The config file as a module (to reach its `get_sweep`)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config file {path!r}")
    spec = importlib.util.spec_from_file_location(
        "genjax_sweep_config_" + os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config_dirname(spec: str) -> str:
    """configs/lm_shakespeare.py:tiny -> lm_shakespeare.tiny"""
    path, _, preset = spec.partition(":")
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"{stem}.{preset}" if preset else stem


def set_dotted(config, key: str, value: Any) -> None:
    """config[key] = value for a dotted key; a locked config rejects unknown keys."""
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value


def expand(runs: list[dict], num_seeds: int, base_seed: int) -> list[dict]:
    """Each run x seeds base_seed..base_seed+num_seeds-1 (unless it sets "seed" itself)."""
    out = []
    for run in runs:
        if "seed" in run:
            out.append(dict(run))
        else:
            out.extend({**run, "seed": s} for s in range(base_seed, base_seed + num_seeds))
    return out


def plan(config_spec: str, sweep_name: str, base_config, common: dict, root: str,
         num_seeds: int) -> dict:
    """Everything about a sweep but its execution: the runs, their workdirs and flags.
    Without a sweep name, the one run is the config itself (over `num_seeds` seeds)."""
    if sweep_name:
        module = load_config_module(config_spec.partition(":")[0])
        if not hasattr(module, "get_sweep"):
            raise ValueError(f"{config_spec.partition(':')[0]} defines no get_sweep(add, arg)")
        runs = sweep_lib.collect(module.get_sweep, sweep_name)
    else:
        runs = [{}]  # run name "base"
    runs = expand(runs, num_seeds, int(base_config.seed))
    base_dir = os.path.join(root, config_dirname(config_spec))
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run if k != "seed" and k not in keys]
    planned = []
    for run in runs:
        cfg = copy.deepcopy(base_config)  # validates keys and types before anything runs
        for k, v in run.items():
            try:
                set_dotted(cfg, k, v)
            except (AttributeError, KeyError) as e:
                raise ValueError(f"sweep {sweep_name!r}: unknown config key {k!r} ({e})") from None
            except TypeError as e:
                raise ValueError(f"sweep {sweep_name!r}: bad value for {k}: {e}") from None
        name = sweep_lib.run_name(run)
        planned.append({
            "name": f"{name}/seed={run['seed']}", "overrides": run, "seed": run["seed"],
            "workdir": os.path.join(base_dir, name, f"seed={run['seed']}"),
            "total_steps": int(cfg.total_steps)})
    default_name = os.path.splitext(os.path.basename(config_spec.partition(":")[0]))[0]
    return {"config": config_spec, "sweep": sweep_name or default_name, "keys": keys,
            "common": common, "dir": base_dir, "runs": planned}


def train_command(p: dict, run: dict, python: str) -> list[str]:
    return [python, "-m", "genjax.train", f"--config={p['config']}",
            *sweep_lib.override_flags(p["common"]), *sweep_lib.override_flags(run["overrides"]),
            f"--workdir={run['workdir']}"]


def status(run: dict) -> str:
    """done | partial (has checkpoints: will resume) | new."""
    w = run["workdir"]
    if os.path.exists(os.path.join(w, "final_metrics.json")):
        try:
            with open(os.path.join(w, "config.json")) as f:
                steps = int(json.load(f)["total_steps"])
        except (OSError, ValueError, KeyError):
            steps = run["total_steps"]
        if steps == run["total_steps"]:
            return "done"
    if os.path.isdir(os.path.join(w, "checkpoints")) and os.listdir(os.path.join(w, "checkpoints")):
        return "partial"
    return "new"


def write_manifest(p: dict) -> str:
    from genjax.errors import UserError
    from genjax.workdir import make_workdir
    make_workdir(p["dir"], "--root")  # a file in the way: one error line
    path = os.path.join(p["dir"], p["sweep"] + MANIFEST_SUFFIX)
    # as JSON reads it back: a tuple override is a list there, and must compare equal
    manifest = json.loads(json.dumps({k: p[k] for k in ("config", "sweep", "keys", "common")}))
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        old = {}
    for key in ("config", "common"):  # its runs would be reported as this sweep's
        if key in old and old[key] != manifest[key]:
            raise UserError(f"{path} was planned with {key} {old[key]!r}, this command has "
                            f"{manifest[key]!r}: its runs are not this sweep's; use another "
                            "--root, or the same config and overrides")
    manifest["runs"] = [{"name": r["name"], "overrides": r["overrides"], "seed": r["seed"],
                         "workdir": os.path.relpath(r["workdir"], p["dir"])} for r in p["runs"]]
    manifest["command"] = shlex.join(["python", "-m", "experiments.sweep", *sys.argv[1:]])
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------- local execution
def _die_with_parent() -> None:
    """In the child: SIGTERM when the sweep process dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _alive_elsewhere(workdir: str) -> int | None:
    """pid of a genjax.train still running in `workdir` (from an earlier, killed sweep)."""
    try:
        with open(os.path.join(workdir, "sweep_run.pid")) as f:
            pid = int(f.read())
        os.kill(pid, 0)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except (OSError, ValueError):
        return None
    # its --workdir may be relative to its own cwd: /proc/<pid>/cwd/<it> is that directory
    theirs = [os.path.join(f"/proc/{pid}/cwd", a.split("=", 1)[1]) for a in argv
              if a.startswith("--workdir=")]
    train = any("genjax.train" in a for a in argv)
    return pid if train and any(_same_dir(t, workdir) for t in theirs) else None


def _same_dir(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def run_local(p: dict, todo: list[dict], parallel: int) -> int:
    """Runs `todo` `parallel` at a time; returns the exit code of the sweep."""
    interrupted, unfinished = [], []

    def on_signal(signum, frame):
        interrupted.append(signum)
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    queue, running, failed, started, finished = list(todo), {}, [], 0, 0
    waiting: set[str] = set()
    stopping: set[int] = set()
    n = len(todo)
    try:
        while (queue and not interrupted) or running:
            if interrupted:  # each child once: it checkpoints and exits 143
                for pid, (proc, _, _, _) in running.items():
                    if pid not in stopping and proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
                        stopping.add(pid)
            while queue and not interrupted and len(running) < parallel:
                run = queue.pop(0)
                other = _alive_elsewhere(run["workdir"])
                if other is not None:  # never two writers in one workdir
                    if run["name"] not in waiting:
                        waiting.add(run["name"])
                        print(f"  wait   {run['name']}: pid {other} still runs there",
                              flush=True)
                    queue.append(run)
                    break
                started += 1
                os.makedirs(run["workdir"], exist_ok=True)
                log = open(os.path.join(run["workdir"], "train.log"), "a")
                cmd = train_command(p, run, sys.executable)
                log.write(f"# {shlex.join(cmd)}\n")
                log.flush()
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True,
                                        preexec_fn=_die_with_parent)
                with open(os.path.join(run["workdir"], "sweep_run.pid"), "w") as f:
                    f.write(str(proc.pid))
                running[proc.pid] = (proc, run, log, time.time())
                print(f"[{started}/{n}] start  {run['name']} ({run['status']})", flush=True)
            for pid, (proc, run, log, t0) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                log.close()
                del running[pid]
                os.remove(os.path.join(run["workdir"], "sweep_run.pid"))
                finished += 1
                secs = time.time() - t0
                if rc == 0 and status(run) == "done":
                    print(f"[{finished}/{n}] done   {run['name']} ({secs:.0f} s){_final(run)}",
                          flush=True)
                elif rc == EXIT_PREEMPTED:
                    unfinished.append(run)
                    print(f"[{finished}/{n}] saved  {run['name']} (interrupted; re-run resumes)",
                          flush=True)
                elif interrupted and rc in (-signal.SIGTERM, -signal.SIGINT):
                    unfinished.append(run)  # stopped before train installed its handler
                    print(f"[{finished}/{n}] stopped {run['name']} (interrupted while "
                          f"starting; re-run starts it)", flush=True)
                else:
                    failed.append(run)
                    print(f"[{finished}/{n}] FAILED {run['name']} (exit {rc}); end of "
                          f"{run['workdir']}/train.log:\n{_tail(run['workdir'])}", flush=True)
            time.sleep(0.2)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if failed:
        return 1
    if interrupted or unfinished:
        print(f"interrupted: {len(unfinished)} runs stopped, {len(queue)} not started; "
              f"re-run the same command to continue", flush=True)
        return EXIT_PREEMPTED
    return 0


def _final(run: dict) -> str:
    try:
        with open(os.path.join(run["workdir"], "final_metrics.json")) as f:
            m = json.load(f)
        return f": final loss {m['loss']:.4f}" if "loss" in m else ""
    except (OSError, ValueError):
        return ""


def _tail(workdir: str, lines: int = 15) -> str:
    try:
        with open(os.path.join(workdir, "train.log"), errors="replace") as f:
            return "".join("    " + line for line in f.readlines()[-lines:])
    except OSError:
        return "    (no log)"


# ---------------------------------------------------------------------- CLI
def main(argv) -> None:
    from absl import flags
    from ml_collections import config_flags

    from genjax.errors import ConfigError, UserError
    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.config is None:
        raise UserError("--config is required, e.g. --config=configs/lm_shakespeare.py:tiny")
    spec = _config_spec(sys.argv)
    common = dict(config_flags.get_override_values(FLAGS["config"]))
    try:
        p = plan(spec, FLAGS.sweep, FLAGS.config, common, FLAGS.root, FLAGS.seeds)
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise ConfigError(str(e)) from None
    for run in p["runs"]:
        run["status"] = status(run)
    todo = [r for r in p["runs"] if r["status"] != "done"]
    counts = {s: sum(r["status"] == s for r in p["runs"]) for s in ("done", "partial", "new")}
    summary = (f"sweep {p['sweep']}: {len(p['runs'])} runs under {p['dir']}: "
               f"{counts['done']} done, {counts['partial']} partial, {counts['new']} new")

    if FLAGS.dry_run:
        print(summary)
        for r in p["runs"]:
            print(f"  {r['status']:<8} {r['workdir']}")
        return
    write_manifest(p)
    if FLAGS.emit == "commands":
        print(summary, file=sys.stderr)
        for r in todo:
            print(shlex.join(train_command(p, r, FLAGS.python)))
        return
    print(summary, flush=True)
    if not todo:
        print("nothing to run", flush=True)
        return
    rc = run_local(p, todo, max(1, FLAGS.parallel))
    done = sum(status(r) == "done" for r in p["runs"])
    print(f"sweep {p['sweep']}: {done}/{len(p['runs'])} done. Tables: "
          f"python -m experiments.collect {FLAGS.root}", flush=True)
    if rc:
        sys.exit(rc)


def _config_spec(argv: list[str]) -> str:
    """The raw --config value (file[:preset]) from the command line."""
    spec = None
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            spec = a.split("=", 1)[1]
        elif a == "--config" and i + 1 < len(argv):
            spec = argv[i + 1]
    return spec


def define_flags():
    from absl import flags
    from ml_collections import config_flags
    config_flags.DEFINE_config_file("config", None, "configs/<name>.py[:preset]", lock_config=True)
    flags.DEFINE_string("sweep", "", "sweep name, passed to the config's get_sweep(add, arg) "
                        "(empty: the config itself, over --seeds)")
    flags.DEFINE_string("root", "runs/sweeps", "runs go to <root>/<config>/<k=v,...>/seed=<S>")
    flags.DEFINE_integer("seeds", 1, "seeds per run: config.seed, config.seed + 1, ...",
                         lower_bound=1)
    flags.DEFINE_integer("parallel", 1, "local runs at a time", lower_bound=1)
    flags.DEFINE_bool("dry_run", False, "print the runs and their status; run nothing")
    flags.DEFINE_enum("emit", "", ["", "commands"],
                      "commands: print one train command per unfinished run (Slurm arrays, "
                      "TPU VMs) instead of running")
    flags.DEFINE_string("python", "python", "interpreter named in --emit=commands lines")


if __name__ == "__main__":
    from genjax import cli
    define_flags()
    cli.run(main)
