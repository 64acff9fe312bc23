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
