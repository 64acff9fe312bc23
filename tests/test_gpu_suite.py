"""experiments/bench/gpu_suite.py --smoke: the one-command GPU suite runs every part on the
CPU with tiny shapes and writes a number for each, so the script cannot rot while no GPU is
lent; and its installer picks only the wheels a machine lacks."""
import json
import os

import pytest

from tests import subproc


@pytest.mark.slow
def test_smoke_writes_every_part(tmp_path, data_dir):
    out = tmp_path / "suite.json"
    proc = subproc.run_module("experiments.bench.gpu_suite", "--smoke", f"--out={out}",
                              f"--workroot={tmp_path / 'work'}", "--wheels=",
                              "--diffusion_seconds=1", timeout=1500)  # smoke's least
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-2000:])
    results = json.loads(out.read_text())
    assert results["suite"]["smoke"] and results["suite"]["backend"] == "cpu"
    parts = results["parts"]
    assert list(parts) == ["lm", "decode", "unet", "diffusion"]
    assert all(p["status"] == "ok" for p in parts.values()), parts
    lm, decode = parts["lm"]["result"], parts["decode"]["result"]
    unet, diffusion = parts["unet"]["result"], parts["diffusion"]["result"]
    assert lm["tokens_per_s"] > 0 and lm["ratio_to_reference"] > 0 and lm["step_ms"] > 0
    assert [r["batch"] for r in decode["rows"]] == [1, 64]
    assert all(r["tokens_per_s"] > 0 for r in decode["rows"])
    assert decode["prompt_len"] + decode["new_tokens"] == decode["context"]
    assert unet["images_per_s"] > 0 and unet["params"] > 0 and unet["image_shape"][:2] == [32, 32]
    assert diffusion["steps_done"] >= 1
    assert 0 < diffusion["test_vlb_bpd"] < 20, diffusion["likelihood"]
    for name in ("lm", "decode", "unet", "diffusion"):  # the printed table has each part
        assert f"\n{name} " in proc.stdout


def test_wheels_to_install_picks_what_is_missing_or_too_old(tmp_path):
    from experiments.bench import gpu_suite
    for name in ("numpy-2.9.0-cp312-cp312-manylinux_2_28_x86_64.whl",  # installed, new enough
                 "no_such_dist_xyz-1.0-py3-none-any.whl",                # not installed
                 "ml_collections-1.1.0-py3-none-any.whl"):               # installed
        (tmp_path / name).write_bytes(b"")
    got = [os.path.basename(p) for p in gpu_suite.wheels_to_install(str(tmp_path))]
    assert got == ["no_such_dist_xyz-1.0-py3-none-any.whl"]
    reqs = gpu_suite._requirements()
    assert not reqs["flax"].specifier.contains("0.8.0")  # an older flax would be replaced
