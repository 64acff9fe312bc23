"""genjax.aot: per-device memory of the compiled, sharded train step agrees with a hand
count; TPU slices compile on a machine without TPUs (when libtpu is installed)."""
import importlib.util
import json
import os
import subprocess
import sys

import jax
import pytest

from configs import lm_shakespeare
from genjax import aot
from tests import subproc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V = 128  # vocab of these checks (the tokenizer is not loaded)


def tiny_config(**mesh):
    c = lm_shakespeare.get_config("tiny")
    c.unlock()
    c.model.vocab_size = V
    c.mesh.update(mesh)
    c.lock()
    return c


def hand_count_params(V, T, D, L, mlp_ratio):
    """The tiny LM: tied token embedding, learned positions, no biases (use_bias=False)."""
    per_layer = (2 * D                    # LayerNorm scales (attention, mlp)
                 + 4 * D * D              # query, key, value, out
                 + 2 * mlp_ratio * D * D)  # up, down
    return V * D + T * D + L * per_layer + D  # + final LayerNorm scale


def test_local_fsdp_bytes_match_a_hand_count():
    """fsdp=8: every tiny-LM parameter has an `embed` dim (32, divisible by 8), so each
    device holds 1/8 of each; AdamW state = mu + nu (same sharding) + two int32 counts
    (Adam's and the learning-rate schedule's)."""
    assert jax.device_count() == 8
    r = aot.check(tiny_config(data=1, fsdp=8, tensor=1), jax.devices())
    n = hand_count_params(V, T=32, D=32, L=2, mlp_ratio=4)
    assert r["params_count"] == n == 29856
    assert r["params"] == n * 4 // 8
    assert r["opt_state"] == 2 * r["params"] + 2 * 4
    assert r["ema_params"] == 0
    assert r["batch"] == (8 // 8) * 33 * 4  # one row of 33 int32 tokens per device
    # XLA's view of the same program: its inputs are the state and the batch.
    assert r["arguments"] >= r["params"] + r["opt_state"] + r["batch"]
    assert r["temporaries"] > 0 and r["total"] >= r["arguments"]


def test_a_lora_runs_frozen_base_is_counted_in_the_breakdown():
    """LoRA keeps the base in model_state: it is a full (data-parallel: replicated) copy of
    the hand-counted params, a row of the report, and part of XLA's arguments."""
    c = tiny_config(data=8, fsdp=1, tensor=1)
    c.unlock()
    c.lora.rank, c.lora.alpha, c.optim.ema_decay = 4, 8.0, 0.0
    c.lock()
    r = aot.check(c, jax.devices())
    n = hand_count_params(V, T=32, D=32, L=2, mlp_ratio=4)
    assert r["model_state"] == n * 4 and r["params"] == 4608 * 4  # rank-4 adapters
    assert r["arguments"] >= r["params"] + r["opt_state"] + r["model_state"] + r["batch"]
    assert "frozen models (model_state)" in aot.report(r, "lora")


def test_aot_cli_bad_topology_is_one_line():
    env = subproc.env()
    proc = subprocess.run([sys.executable, "-m", "genjax.aot",
                           "--config=configs/lm_shakespeare.py:tiny", "--topology=v9z:4x4"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "v9z:4x4" in proc.stderr


def test_a_json_path_it_cannot_write_is_exit_2_before_compiling(tmp_path):
    """Exit 1 means "does not fit"; a folder or a file in the way of the folder given as
    --json is bad input (2), found before the step is compiled (no report printed)."""
    (tmp_path / "a_file").write_text("")
    for bad in (tmp_path, tmp_path / "a_file" / "aot.json"):
        proc = subprocess.run([sys.executable, "-m", "genjax.aot",
                               "--config=configs/lm_shakespeare.py:tiny", f"--json={bad}"],
                              cwd=ROOT, env=subproc.env(), capture_output=True, text=True,
                              timeout=120)
        subproc.assert_one_line_error(proc, "--json=")
        assert "genjax.aot:" not in proc.stdout  # nothing compiled


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="libtpu not installed (pip install -e '.[tpu-aot]')")
@pytest.mark.parametrize("topology,chips,hbm_gib", [("v5e:2x2", 4, 16), ("v5p:2x2x1", 4, 95)])
def test_tpu_slices_compile_without_tpus(tmp_path, topology, chips, hbm_gib):
    out = tmp_path / "aot.json"
    env = subproc.env()
    proc = subprocess.run(
        [sys.executable, "-m", "genjax.aot", "--config=configs/lm_shakespeare.py:tiny",
         f"--topology={topology}", f"--config.model.vocab_size={V}", "--config.mesh.data=1",
         "--config.mesh.fsdp=-1", f"--json={out}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode == 2 and "libtpu cannot describe" in proc.stderr:
        pytest.skip(proc.stderr.strip().splitlines()[-1])  # a libtpu that doesn't match jax
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["devices"] == chips and "TPU" in r["device_kind"]
    assert r["mesh"] == {"data": 1, "fsdp": chips, "tensor": 1}
    assert r["params"] == hand_count_params(V, T=32, D=32, L=2, mlp_ratio=4) * 4 // chips
    assert r["hbm"] == hbm_gib * 2**30 and r["fits"] is True
    assert r["temporaries"] > 0 and r["total"] > r["params"] + r["opt_state"]
    assert "fits" in proc.stdout


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="libtpu not installed (pip install -e '.[tpu-aot]')")
def test_a_step_that_cannot_fit_is_reported_with_exit_1(tmp_path):
    """32k-token context: the (un-fused, T x T) attention scores need > 16 GiB per v5e chip."""
    out = tmp_path / "aot.json"
    env = subproc.env()
    proc = subprocess.run(
        [sys.executable, "-m", "genjax.aot", "--config=configs/lm_shakespeare.py:tiny",
         "--topology=v5e:2x2", f"--config.model.vocab_size={V}", "--config.model.max_len=32768",
         "--config.batch_size=4", f"--json={out}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode == 2 and "libtpu cannot describe" in proc.stderr:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "DOES NOT FIT" in proc.stdout and "Traceback" not in proc.stderr
    r = json.loads(out.read_text())
    assert r["fits"] is False and r["temporaries"] > 16 * 2**30 > r["usable_hbm"]
