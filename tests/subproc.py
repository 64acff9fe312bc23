"""Running genjax's command-line tools from tests: one environment, one error check.

Subprocesses get the test session's environment (tests/conftest.py: key-reuse checker,
shared compilation cache) with their own XLA_FLAGS: `devices` fake CPU devices. `run`
forks `python -m module` runs from a pre-imported server (tests/zygote.py).
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Tests compile far more than they run: XLA:CPU's LLVM backend at -O0 compiles the tiny
# models ~2x faster (t2i train step: 96 s -> 53 s on 2 busy cores) and runs them slower;
# its older elemental emitters instead of the MLIR fusion emitters halve the rest (tiny LM
# train step 2.0 -> 0.9 s, tiny GAN 3.0 -> 1.1 s, tiny U-Net 6.1 -> 4.3 s). Either changes
# only the last bits of a step's numbers, as any change of compiler settings may. One LLVM
# module per program instead of XLA's default split into parallel codegen parts: on 2 cores
# that two pytest workers keep busy the threads only add overhead (tiny U-Net train step
# alone: 3.5/2.7 -> 2.4/2.2 s; two test files side by side: within the noise; the same
# numbers, bit for bit).
# XLA aborts on a flag it does not know, so a flag a jaxlib lacks is left out (probed once
# per session, in a subprocess; the result travels to workers and subprocesses).
FAST_COMPILE_WANTED = ("--xla_backend_optimization_level=0",
                       "--xla_cpu_use_fusion_emitters=false",
                       "--xla_cpu_parallel_codegen_split_count=1")
_PROBED = "GENJAX_TEST_FAST_COMPILE"


def accepted_flags(wanted: tuple[str, ...]) -> list[str]:
    """The XLA flags of `wanted` that this jaxlib accepts: one subprocess starting JAX's CPU
    backend with all of them, and one per flag if that one fails."""
    def accepted(flags) -> bool:
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags))
        return subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env,
                              capture_output=True, timeout=120).returncode == 0
    return list(wanted) if accepted(wanted) else [f for f in wanted if accepted([f])]


def _fast_compile() -> str:
    if _PROBED not in os.environ:
        os.environ[_PROBED] = " ".join(accepted_flags(FAST_COMPILE_WANTED))
    return os.environ[_PROBED]


FAST_COMPILE = _fast_compile()


def xla_flags(devices: int = 1) -> str:
    """XLA_FLAGS of the tests: FAST_COMPILE, and `devices` fake CPU devices."""
    fake = f" --xla_force_host_platform_device_count={devices}" if devices > 1 else ""
    return FAST_COMPILE + fake


def env(devices: int = 1, **extra: str) -> dict:
    """os.environ for a subprocess on `devices` fake CPU devices, plus `extra`."""
    out = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(devices))
    out.update(extra)
    return out


def run_module(module: str, *args, env_extra: dict | None = None, timeout: int = 300,
               devices: int = 1) -> subprocess.CompletedProcess:
    """`python -m module args...` from the repository root; text output captured."""
    return run([sys.executable, "-m", module, *map(str, args)],
               env(devices, **(env_extra or {})), timeout)


def run(argv: list[str], env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    """subprocess.run(argv) from the repository root, text output captured; a
    `python -m module ...` runs in a child of the pre-imported server (tests/zygote.py)."""
    from tests import zygote
    if argv[:2] == [sys.executable, "-m"] and zygote.usable(env):
        return zygote.run(argv, ROOT, env, timeout)
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(proc, *needles) -> None:
    """Exit code 2, no traceback, exactly one `error:` line containing every needle."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


def losses_by_step(workdir) -> dict:
    """{step: loss} from W/metrics.jsonl, each step's last logged loss (a resumed or
    rolled-back run logs some steps twice). Non-finite losses are kept, unlike
    genjax.evaluators.plots.read_metrics: the fault tests must see them. A missing file
    raises."""
    from genjax.metrics_writer import read_rows
    rows = read_rows(os.path.join(workdir, "metrics.jsonl"), missing_ok=False)
    return {row["step"]: row["loss"] for row in rows if "loss" in row}
