"""The progress line (genjax/metrics_writer.py) and the peak-FLOP/s table behind its MFU
(genjax/flops.py)."""
import pytest

from genjax import flops
from genjax.metrics_writer import Progress, format_eta


# device_kind strings as JAX reports them -> the datasheet's dense bf16 peak
@pytest.mark.parametrize("kind, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12),
    ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12),
    ("NVIDIA A100-PCIE-40GB", 312e12),
    ("NVIDIA L4", 121e12),
    ("NVIDIA L40S", 362e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5", 459e12),
    ("TPU v6 lite", 918e12),
    ("TPU v4", 275e12),
    ("NVIDIA L40", None),             # not in the table: no MFU rather than a wrong one
    ("NVIDIA GeForce RTX 4090", None),
    ("cpu", None),
])
def test_peak_flops_match_the_model_exactly(kind, peak):
    assert flops.peak_for_kind(kind) == peak


def test_peak_flops_override_wins():
    assert flops.peak_flops_per_device(123.0) == 123.0


@pytest.mark.parametrize("seconds, text", [
    (0, "00:00:00"), (59.4, "00:00:59"), (3661, "01:01:01"), (86399, "23:59:59"),
    (86400, "1d 00:00:00"), (3 * 86400 + 4 * 3600 + 5 * 60 + 6, "3d 04:05:06"),
    (float("inf"), "?"),
])
def test_eta_counts_days_instead_of_wrapping(seconds, text):
    assert format_eta(seconds) == text


def test_throughput_leaves_out_the_first_step_and_reports_it_once(monkeypatch):
    clock = iter([0.0, 30.0, 34.0])  # start; compile + step 1 at 30 s; steps 2-3 in 4 s
    monkeypatch.setattr("genjax.metrics_writer.time.perf_counter", lambda: next(clock))
    progress = Progress(total_steps=10, start_step=0, unit="tokens")
    assert progress.first_step_done(1) == 30.0
    assert progress.rate(1) == 0.0  # no steady step finished yet: no rate ...
    assert progress.line(1, {"loss": 2.0}, 0.0, 100, None) == "step 1/10 | loss 2.0000"
    assert progress.rate(3) == 0.5  # steps 2..3 in 4 s, the 30 s compile left out
    assert progress.line(3, {"loss": 2.0}, 0.5, 100, None) == \
        "step 3/10 | loss 2.0000 | 50 tokens/s | ETA 00:00:14"
