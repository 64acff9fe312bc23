"""Test session: 8 fake CPU devices (set before JAX is imported), tiny configs.

Also set here, through the environment so that the subprocesses the tests launch get them:
  JAX_DEBUG_KEY_REUSE   JAX's key-reuse checker: using a typed key twice raises
                        KeyReuseError. It sees typed keys only; the train step hands the
                        loss functions a typed key (genjax/step.py: step_key).
  JAX compilation cache compiled programs are shared between the many short training
                        subprocesses (a tiny LM train step takes ~9 s to compile on 2 cores),
                        the small eager ops too (min compile time 0: ~1 s per CLI launch).
  XLA_FLAGS             8 fake devices here; subprocesses get theirs from tests/subproc.py;
                        both compile fast (-O0, legacy emitters, one LLVM module:
                        subproc.FAST_COMPILE).
Most `python -m genjax.<command>` subprocesses are forked from a pre-imported server
(tests/subproc.py: run; tests/zygote.py).
"""
import collections
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # `import configs...` / `experiments...` / `tests...` from tests

from tests import subproc  # noqa: E402  (no JAX import)

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + subproc.xla_flags(8)).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["JAX_DEBUG_KEY_REUSE"] = "true"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"genjax-tests-xla-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
import pytest  # noqa: E402

# The test files that take longest, longest first (CPU seconds of the file run alone, `-n 0`,
# on the idle 2 cores, 2026-12-02). `--dist loadfile` hands out whole files in collection
# order (setup.cfg: --no-loadscope-reorder keeps ours), so a long file handed out last keeps
# one worker busy while the other idles; xdist's own order (most tests first) put the long
# one- and two-test files (demo, gpu_suite, multiprocess) last. Files not named here follow,
# most tests first. Re-measure with `pytest -n 0 --durations=0 tests/test_X.py` when a file
# gets much slower or a long one is added.
LONGEST_FIRST = (
    "test_families.py", "test_families_resume.py", "test_finetune_demo.py",
    "test_guidance_distill.py", "test_multiprocess.py", "test_gpu_suite.py",
    "test_text_to_image.py", "test_sweep.py",
)


def pytest_collection_modifyitems(config, items):
    """Orders the files: LONGEST_FIRST, then the others by number of tests (most first);
    each file's tests stay together, in their order."""
    missing = [f for f in LONGEST_FIRST if not os.path.exists(os.path.join(ROOT, "tests", f))]
    if missing:
        raise pytest.UsageError(f"tests/conftest.py LONGEST_FIRST names no such file: {missing}")
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    count = collections.Counter(item.path.name for item in items)
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), -count[item.path.name],
                                 item.path.name))


def _session_root(tmp_path_factory, request):
    """The session's temporary root; under pytest-xdist the one common to its workers."""
    root = tmp_path_factory.getbasetemp()
    if hasattr(request.config, "workerinput"):  # a pytest-xdist worker
        root = root.parent
    return root


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, request):
    """One prepared-data directory for the whole session, common to the pytest-xdist
    workers (each dataset is built on first use, once: genjax/data/build_lock.py)."""
    path = os.environ.get("GENJAX_TEST_DATA_DIR") or str(
        _session_root(tmp_path_factory, request) / "tfds")
    os.makedirs(path, exist_ok=True)
    os.environ["GENJAX_DATA_DIR"] = path
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, data_dir, request):
    """tiny_run(family) -> the workdir (pathlib.Path) of the short uninterrupted run of
    that family (tests/families.py: run_config), trained on first use. Under pytest-xdist
    the workers share one run per family (the first trains it, under a file lock; the
    others wait and read it). Readers may add files (an eval/ report), never train in it."""
    import fcntl
    import json
    from genjax import train
    from tests.families import run_config
    root = _session_root(tmp_path_factory, request)
    runs = {}

    def get(family: str):
        if family not in runs:
            workdir = root / f"tiny_run_{family}"
            with open(root / f"tiny_run_{family}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                done = workdir / "final_metrics.json"
                if not done.exists():
                    train.train(run_config(family), str(workdir))
                json.loads(done.read_text())  # a finished run
            runs[family] = workdir
        return runs[family]
    return get


@pytest.fixture(scope="session")
def copy_tiny_feature_net(tmp_path_factory, data_dir, request):
    """copy_tiny_feature_net(cache_dir) -> the copy's folder: puts the evaluators' tiny
    feature net (configs/fmnist_classifier.py:tiny) into `cache_dir` (a feature-net cache,
    $GENJAX_CACHE_DIR/feature_net), where load_feature_net finds it. The net is trained on
    first use (load_feature_net) once per session, in a folder the pytest-xdist workers
    share (under a file lock) and nobody changes."""
    import fcntl
    import shutil
    from configs import fmnist_classifier
    from genjax import train
    from genjax.evaluators import feature_net
    cache = _session_root(tmp_path_factory, request) / "genjax_cache" / "feature_net"
    cache.mkdir(parents=True, exist_ok=True)
    with open(f"{cache}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        net_dir = feature_net.load_feature_net(
            fmnist_classifier.get_config("tiny").data, preset="tiny", cache_dir=str(cache),
            train_fn=train.train).directory
    return lambda cache_dir: shutil.copytree(
        net_dir, os.path.join(cache_dir, os.path.basename(net_dir)))
