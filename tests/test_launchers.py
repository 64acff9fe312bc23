"""The launch scripts' shell that can run without a cluster: what tpu_vm.sh --setup ships."""
import os
import re
import subprocess
import tarfile

from tests.subproc import ROOT


def test_the_tpu_vm_source_tarball_holds_every_package_and_no_local_data(tmp_path):
    """Its tar line, run on this checkout: genjax/data (a package) is shipped, the
    checkout's own ./data, ./runs, ./.venv and ./.git (where they exist) are not."""
    with open(os.path.join(ROOT, "experiments", "launch", "tpu_vm.sh")) as f:
        script = f.read()
    [line] = [ln.strip() for ln in script.splitlines() if ln.strip().startswith('tar -C "$repo"')]
    out = tmp_path / "src.tgz"
    cmd = line.replace('"$repo"', f'"{ROOT}"').replace("/tmp/genjax_src.tgz", str(out))
    subprocess.run(["bash", "-c", cmd], check=True, timeout=120)
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert "./genjax/data/__init__.py" in names
    assert "./genjax/train.py" in names and "./configs/lm_shakespeare.py" in names
    assert not [n for n in names if re.match(r"\./(data|runs|\.venv|\.git)(/|$)", n)]
