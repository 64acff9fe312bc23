"""Test session: 8 fake CPU devices (set before JAX is imported), tiny configs."""
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # `import configs...` / `experiments...` from tests

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """One prepared-data directory for the whole session (built on first use)."""
    path = os.environ.get("GENJAX_TEST_DATA_DIR") or str(tmp_path_factory.mktemp("tfds"))
    os.environ["GENJAX_DATA_DIR"] = path
    return path
