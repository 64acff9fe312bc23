"""Test session: 8 fake CPU devices (set before JAX is imported), tiny configs.

Also set here, through the environment so that the subprocesses the tests launch get them:
  JAX_DEBUG_KEY_REUSE   JAX's key-reuse checker: using a typed key twice raises
                        KeyReuseError. It sees typed keys only; the train step hands the
                        loss functions a typed key (genjax/step.py: step_key).
  JAX compilation cache compiled programs are shared between the many short training
                        subprocesses (a tiny LM train step takes ~9 s to compile on 2 cores).
"""
import os
import sys
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["JAX_DEBUG_KEY_REUSE"] = "true"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"genjax-tests-xla-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # `import configs...` / `experiments...` from tests

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """One prepared-data directory for the whole session (built on first use)."""
    path = os.environ.get("GENJAX_TEST_DATA_DIR") or str(tmp_path_factory.mktemp("tfds"))
    os.environ["GENJAX_DATA_DIR"] = path
    return path
