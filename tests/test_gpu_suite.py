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


def test_one_installable_wheel_per_distribution_the_pinned_one_first(tmp_path, monkeypatch):
    """A stale second version or another platform's wheel in .whl/ used to go to pip with
    the rest and fail the whole install (ResolutionImpossible, "not a supported wheel")."""
    from experiments.bench import gpu_suite
    assert gpu_suite._pins()["jax"]  # constraints.txt is read
    for name in ("no_such_dist_xyz-1.0-py3-none-any.whl", "no_such_dist_xyz-2.0-py3-none-any.whl",
                 "other_dist_xyz-3.0-py3-none-any.whl", "other_dist_xyz-4.0-py3-none-any.whl",
                 "armv7_dist_xyz-1.0-cp27-cp27mu-linux_armv7l.whl"):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setattr(gpu_suite, "_pins", lambda: {"no-such-dist-xyz": "1.0"})
    got = [os.path.basename(p) for p in gpu_suite.wheels_to_install(str(tmp_path))]
    assert got == ["no_such_dist_xyz-1.0-py3-none-any.whl", "other_dist_xyz-4.0-py3-none-any.whl"]


def test_bench_overrides_parse_booleans_and_tuples_or_say_why_not():
    from ml_collections import ConfigDict
    from experiments.bench.lm_throughput import apply_overrides
    c = ConfigDict({"model": {"scan_layers": False, "channel_mult": (1, 2), "width": 8}})
    apply_overrides(c, ["model.scan_layers=True", "model.channel_mult=(1,2,2)", "model.width=16"])
    assert c.model.scan_layers is True and c.model.channel_mult == (1, 2, 2)
    assert c.model.width == 16
    apply_overrides(c, ["model.scan_layers=0", "model.channel_mult=4"])
    assert c.model.scan_layers is False and c.model.channel_mult == (4,)
    with pytest.raises(ValueError, match="model.scan_layers='yes please': cannot be a bool"):
        apply_overrides(c, ["model.scan_layers=yes please"])
