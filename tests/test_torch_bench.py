"""The PyTorch reference of the CPU throughput bench builds genjax's `cpu` LM shape
(runs only where torch is installed; genjax does not depend on it)."""
import json

import pytest


def test_the_pytorch_reference_has_the_cpu_presets_parameter_count(tmp_path):
    pytest.importorskip("torch")
    from experiments.bench import lm_throughput, torch_lm_throughput
    out = tmp_path / "torch.json"
    assert torch_lm_throughput.main(["--steps=2", "--warmup=1", f"--out={out}"]) is None
    ref = json.loads(out.read_text())
    ours = lm_throughput.run("cpu", 16, steps=1, warmup=0, overrides=[])  # 8 test devices
    assert ref["params"] == ours["params"] == 812_160
    assert ref["tokens_per_s"] > 0 and ref["batch_size"] * ref["seq_len"] == 12 * 64


def test_the_profile_finds_the_matmul_kernels_inside_the_step(tmp_path):
    pytest.importorskip("torch")
    from experiments.bench import torch_lm_throughput
    out = tmp_path / "torch.json"
    torch_lm_throughput.main(["--steps=3", "--warmup=1", "--profile", f"--out={out}"])
    r = json.loads(out.read_text())
    # 4 layers x 6 linear layers, forward and backward, run under the profiler: a real
    # share of the step, never more than all of it.
    assert 0.1 * r["profiled_step_ms"] < r["matmul_ms"] < r["profiled_step_ms"]
