r"""GPU figures in one command: install what the machine lacks from carried wheels, time
everything owed, write one JSON (rewritten after each part) and print a table.

  bash experiments/bench/gpu_wheels.sh            # here, with PyPI: .whl/, data/fashion-mnist/
  python3 -m experiments.bench.gpu_suite          # there (one H200, no internet): ~9 min
  python -m experiments.bench.gpu_suite --smoke   # the CPU, tiny shapes: < 60 s on one core
  python3 -m experiments.bench.gpu_suite --only=diffusion --diffusion_seconds=400

1. `import jax` in a subprocess: the machine's jax and CUDA are used as they are (jaxlib
   alone is an 85 MB wheel and its CUDA plugin 174 MB: more than a repository copy carries).
2. Each wheel in --wheels (default .whl/) whose distribution is missing here, or older than
   pyproject.toml allows, goes into --site (`pip install --no-index --no-deps --target`),
   first on the parts' PYTHONPATH.
3. The parts (experiments/bench/gpu_parts.py: lm, decode, unet, diffusion), each in its own
   process group with a timeout, so one failure loses no other.
The whole suite keeps within --budget_s (default 560 s; a lent GPU machine runs one command
for at most 600 s): the diffusion part trains --diffusion_seconds (default 180 s) after its
first step, and is told to stop earlier if that would leave less than DIFFUSION_RESERVE_S
of the budget for its final save and evaluation (a deadline, not an estimate of its start:
the part is skipped if less than DIFFUSION_OVERHEAD_S is left).
Output: experiments/bench/results/gpu_suite_<device>.json (or --out).
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from experiments.bench.gpu_parts import ROOT, stream

ORDER = ("lm", "decode", "unet", "diffusion")
PART_TIMEOUT_S = {"lm": 180, "decode": 180, "unet": 180}  # smoke: no timeouts
DIFFUSION_OVERHEAD_S = 150  # data prep, compile, final checkpoint, evaluate (H200, 2026-12)
DIFFUSION_RESERVE_S = 80    # SIGTERM -> save -> exit (~21 s) + evaluate (~26 s), doubled-ish
PROBE = ("import json, jax; d = jax.devices()[0]; print(json.dumps({'jax': jax.__version__, "
         "'backend': jax.default_backend(), 'device_kind': d.device_kind, "
         "'devices': jax.device_count()}))")


# ---------------------------------------------------------------------- install
def _requirements() -> dict:
    """{canonical name: packaging Requirement} of pyproject.toml's dependencies."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    return {canonicalize_name(r.name): r for r in map(Requirement, deps)}


def _pins() -> dict:
    """{canonical name: version} pinned in constraints.txt."""
    from packaging.utils import canonicalize_name
    pins = {}
    with open(os.path.join(ROOT, "constraints.txt")) as f:
        for line in f:
            name, sep, version = line.split("#")[0].strip().partition("==")
            if sep:
                pins[canonicalize_name(name)] = version.strip()
    return pins


def _usable_wheels(wheel_dir: str) -> dict:
    """{canonical name: path}: one wheel per distribution that this interpreter can
    install (a stale or foreign-Python wheel in the folder used to fail the whole pip
    call), the one constraints.txt pins if present, else the newest."""
    from packaging.tags import sys_tags
    from packaging.utils import canonicalize_name, parse_wheel_filename
    supported, found = set(sys_tags()), {}
    for path in sorted(glob.glob(os.path.join(wheel_dir, "*.whl"))):
        name, version, _, tags = parse_wheel_filename(os.path.basename(path))
        if tags & supported:
            found.setdefault(canonicalize_name(name), []).append((version, path))
    pins = _pins()
    return {name: next((p for v, p in wheels if str(v) == pins.get(name)), max(wheels)[1])
            for name, wheels in found.items()}


def wheels_to_install(wheel_dir: str) -> list[str]:
    """The wheels in `wheel_dir` (one per distribution, installable here) whose
    distribution is not installed, or is installed at a version pyproject.toml's
    dependencies exclude (e.g. an older flax)."""
    import importlib.metadata as md

    reqs, out = _requirements(), []
    for name, path in sorted(_usable_wheels(wheel_dir).items()):
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            out.append(path)
            continue
        if name in reqs and not reqs[name].specifier.contains(have, prereleases=True):
            out.append(path)
    return out


def install(wheels: list[str], site: str) -> None:
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        "--no-compile", "--no-cache-dir", "--upgrade", "--target", site,
                        *wheels], check=True)


# ---------------------------------------------------------------------- parts
def part_options(args, left_s: float) -> dict:
    opts = {"smoke": args.smoke, "workroot": args.workroot, "lm_set": args.lm_set,
            "unet_set": args.unet_set, "diffusion_set": args.diffusion_set,
            "lm_steps": 5 if args.smoke else 30, "unet_steps": 3 if args.smoke else 30,
            "warmup": 1 if args.smoke else 3,
            "diffusion_params": args.diffusion_params,
            "diffusion_seconds": args.diffusion_seconds or (3 if args.smoke else 180)}
    if not args.smoke:  # train only what the budget leaves: stopped by this wall time
        opts["diffusion_stop_unix"] = time.time() + left_s - DIFFUSION_RESERVE_S
    return opts


def run_part(name: str, opts: dict, env: dict, timeout_s: float) -> dict:
    """Runs one part in its own process group; {"status", "seconds", "result" | "error"}."""
    out = os.path.join(opts["workroot"], f"part_{name}.json")
    cmd = [sys.executable, "-m", "experiments.bench.gpu_parts", name, out, json.dumps(opts)]
    print(f"== {name} (timeout {timeout_s:.0f} s)", flush=True)  # inf in smoke
    r = stream(cmd, name, env=env, timeout_s=timeout_s, own_group=True)
    entry = {"seconds": round(r["wall_s"], 1)}
    if r["rc"] == 0 and os.path.exists(out):
        with open(out) as f:
            return {"status": "ok", **entry, "result": json.load(f)}
    status = "timeout" if r["rc"] is None else "failed"
    print(f"== {name}: {status} after {r['wall_s']:.0f} s", flush=True)
    return {"status": status, **entry, "rc": r["rc"],
            "why": f"after {r['wall_s']:.0f} s" + ("" if r["rc"] is None else f", exit {r['rc']}"),
            "error": "\n".join(r["tail"][-25:])}


def device_slug(probe: dict, smoke: bool) -> str:
    kind = re.sub(r"[^a-z0-9]+", "_", probe.get("device_kind", "unknown").lower()).strip("_")
    return ("smoke_" if smoke else "") + (kind or "unknown")


def write(path: str, results: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


# ---------------------------------------------------------------------- table
def _rows(name: str, r: dict) -> list[tuple[str, str, str]]:
    """(figure, value, goal or reference) rows of one part's result."""
    ok = lambda good: "yes" if good else "NO"  # noqa: E731
    if name == "lm":
        mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        return [(f"{r['preset']} train tokens/s ({r['batch_size']} x {r['seq_len']}, "
                 f"{r['compute_dtype']})", f"{r['tokens_per_s']:,.0f}",
                 f"{r['ratio_to_reference']:.2f} x nanoGPT/H100 "
                 f"{r['reference_tokens_per_s']:,.0f}; goal {r['goal_ratio']}x: "
                 f"{ok(r['meets_goal'])}"),
                ("  MFU / step", f"{mfu} / {r['step_ms']:.1f} ms", "")]
    if name == "decode":
        return [(f"decode batch {row['batch']} ({r['prompt_len']} + {r['new_tokens']} tokens)",
                 f"{row['tokens_per_s']:,.0f} tok/s",
                 f"goal {row['goal_tokens_per_s']:,}: {ok(row['meets_goal'])}")
                for row in r["rows"]]
    if name == "unet":
        return [(f"U-Net train images/s ({r['params']:,} params, "
                 f"{'x'.join(map(str, r['image_shape'][:2]))}, batch {r['batch_size']}, "
                 f"{r['compute_dtype']})", f"{r['images_per_s']:,.0f}",
                 f"{r['step_ms']:.1f} ms/step")]
    return [(f"diffusion {r['config'].split(':')[-1]}: {r['steps_done']} steps in "
             f"{r.get('trained_s', r['after_first_step_s']):.0f} s after compiling",
             f"{r['test_vlb_bpd']:.4f} bits/dim",
             f"test vlb, {r['params_evaluated']} params; loop "
             f"{r['loop_images_per_s_median'] or 0:,.0f} images/s")]


def table(results: dict) -> str:
    rows = []
    for name, entry in results["parts"].items():
        if entry["status"] == "ok":
            try:
                rows += [(name, *row) for row in _rows(name, entry["result"])]
            except (KeyError, TypeError, ValueError) as e:  # a None where a number was due
                rows.append((name, "ok, but the table cannot show it", repr(e), ""))
        else:
            rows.append((name, entry["status"].upper(), entry.get("why", ""), ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)] if rows else [0] * 4
    return "\n".join(" | ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in rows)


# ---------------------------------------------------------------------- main
def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny presets on the CPU")
    p.add_argument("--only", default="", help="comma-separated parts: " + ",".join(ORDER))
    p.add_argument("--out", default="", help="default results/gpu_suite_<device>.json")
    p.add_argument("--wheels", default=os.path.join(ROOT, ".whl"), help="'' = install nothing")
    p.add_argument("--site", default=os.path.join(tempfile.gettempdir(), "genjax_site"))
    p.add_argument("--workroot", default="", help="workdirs and part outputs (default: temp)")
    p.add_argument("--budget_s", type=float, default=0, help="0: 560 (smoke: none)")
    p.add_argument("--diffusion_seconds", type=float, default=0, help="0: 180 (smoke: 3)")
    p.add_argument("--diffusion_params", default="raw", help="ema | raw (EMA 0.9999 needs "
                   "~10k steps to forget its init: longer than a short run)")
    for part in ("lm", "unet", "diffusion"):
        p.add_argument(f"--{part}_set", action="append", default=[],
                       help=f"{part} config override key=value (repeatable)")
    args = p.parse_args(argv)
    unknown = sorted({n for n in args.only.split(",") if n} - set(ORDER))
    if unknown:
        p.error(f"--only: no part {', '.join(unknown)}; parts: {', '.join(ORDER)}")
    return args


def prepare(args, env: dict) -> dict:
    """Probes jax, installs the missing wheels; the suite's header (`error` if no jax)."""
    def probe():
        try:
            p = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                               text=True, timeout=180)
        except subprocess.TimeoutExpired:
            return {"error": ["`import jax; jax.devices()` took over 180 s"]}
        return json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else \
            {"error": p.stderr.strip().splitlines()[-1:]}
    first = probe()
    if args.wheels and not os.path.isdir(args.wheels):  # git-ignored: travels only if carried
        print(f"warning: no wheel folder {args.wheels} (run gpu_wheels.sh here and carry "
              f".whl with the repository); installing nothing", flush=True)
    wheels = wheels_to_install(args.wheels) if args.wheels and os.path.isdir(args.wheels) else []
    print(f"jax: {first}; installing {len(wheels)} wheels from {args.wheels or '-'}", flush=True)
    try:
        install(wheels, args.site)
        failed = None
    except subprocess.CalledProcessError as e:  # the parts will say what is missing
        failed = f"pip exited with {e.returncode}"
    if wheels:
        env["PYTHONPATH"] = os.pathsep.join([args.site, env["PYTHONPATH"]])
    found = probe() if "error" in first or wheels else first
    return {**found, "install_error": failed, "smoke": args.smoke,
            "installed": [os.path.basename(w) for w in wheels],
            "python": sys.version.split()[0], "budget_s": args.budget_s,
            "started": datetime.datetime.now().isoformat(timespec="seconds")}


def main(argv=None) -> int:
    args = parse(argv)
    t0 = time.perf_counter()
    args.budget_s = args.budget_s or (None if args.smoke else 560)  # smoke: no time limits
    args.workroot = os.path.abspath(args.workroot or tempfile.mkdtemp(prefix="gpu_suite_"))
    os.makedirs(args.workroot, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    env.setdefault("GENJAX_DATA_DIR", os.path.join(args.workroot, "tfds"))
    # the diffusion part's train step is the unet part's: compiled once
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(args.workroot, "xla_cache"))
    results = {"suite": prepare(args, env), "parts": {}}
    # the device tool returns only $OUT: results written anywhere else stay on the machine
    folder = os.environ.get("OUT") or os.path.join(ROOT, "experiments", "bench", "results")
    out = args.out or os.path.join(
        folder, f"gpu_suite_{device_slug(results['suite'], args.smoke)}.json")
    write(out, results)
    if "error" in results["suite"]:
        print(f"no jax here: {results['suite']['error']}", flush=True)
        return 1
    if not args.smoke and results["suite"].get("backend") != "gpu":
        print(f"error: jax runs on {results['suite'].get('backend')!r}, not a GPU (its CUDA "
              f"plugin did not load?); --smoke times the CPU", flush=True)
        return 1
    for name in [n for n in args.only.split(",") if n] or ORDER:
        left = (args.budget_s or float("inf")) - (time.perf_counter() - t0)
        opts = part_options(args, left)
        timeout = left if name == "diffusion" or args.smoke else min(PART_TIMEOUT_S[name], left)
        short = (opts["diffusion_seconds"] < 1 if args.smoke
                 else left < DIFFUSION_OVERHEAD_S + 10)
        if timeout < 20 or (name == "diffusion" and short):
            results["parts"][name] = {"status": "skipped", "why": f"{left:.0f} s left"}
        else:
            results["parts"][name] = run_part(name, opts, env, timeout)
        write(out, results)
    results["suite"]["seconds"] = round(time.perf_counter() - t0, 1)
    write(out, results)
    print(f"\n{results['suite'].get('device_kind')}, jax {results['suite'].get('jax')}, "
          f"{results['suite']['seconds']:.0f} s; wrote {out}\n{table(results)}", flush=True)
    return 0 if all(p["status"] == "ok" for p in results["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
