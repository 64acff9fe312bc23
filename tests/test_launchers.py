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


def _tpu_vm_ssh(tmp_path, *options):
    """The gcloud arguments tpu_vm.sh passes, with a stub gcloud on PATH that prints them."""
    stub = tmp_path / "gcloud"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    script = os.path.join(ROOT, "experiments", "launch", "tpu_vm.sh")
    out = subprocess.run(["bash", script, "--tpu=t", "--zone=z", *options, "--", "python",
                          "-m", "genjax.evaluate", "--workdir=/w"],
                         env=env, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.splitlines()


def test_tpu_vm_runs_every_worker_as_one_job_or_one_worker_as_one_process(tmp_path):
    """Default: every worker, GENJAX_DISTRIBUTED=1 (jax.distributed joins them);
    --worker=0: worker 0 alone, without it (the one-process tools refuse a multi-process
    launch, genjax/runtime.py)."""
    every = _tpu_vm_ssh(tmp_path)
    assert "--worker=all" in every
    assert any(a.startswith("--command=") and "GENJAX_DISTRIBUTED=1 exec python" in a
               for a in every)
    one = _tpu_vm_ssh(tmp_path, "--worker=0")
    assert "--worker=0" in one and "--worker=all" not in one
    [command] = [a for a in one if a.startswith("--command=")]
    assert "GENJAX_DISTRIBUTED" not in command and "genjax.evaluate" in command
