"""Peak FLOP/s per device (dense bf16, vendor datasheets) for model-FLOPs utilisation."""
from __future__ import annotations

import jax

# Model -> peak dense bf16 FLOP/s (without sparsity). A key is the words a device_kind
# must contain (lower case; "-" and "_" split words); the most specific match wins, so
# "NVIDIA H100 PCIe" is the PCIe part and "NVIDIA L40S" is not an L4. Sources: NVIDIA
# H100/H200/A100/L4/L40S datasheets; Google Cloud TPU system-architecture pages (JAX
# calls v5e "TPU v5 lite", v6e "TPU v6 lite" and v5p "TPU v5").
PEAK_BF16 = {
    ("h200",): 989e12,
    ("gh200",): 989e12,
    ("h100",): 989e12,          # SXM ("NVIDIA H100 80GB HBM3")
    ("h100", "pcie"): 756e12,
    ("h100", "nvl"): 835e12,
    ("a100",): 312e12,          # SXM and PCIe alike
    ("l4",): 121e12,
    ("l40s",): 362e12,
    ("tpu", "v6", "lite"): 918e12,
    ("tpu", "v6e"): 918e12,
    ("tpu", "v5"): 459e12,      # v5p
    ("tpu", "v5p"): 459e12,
    ("tpu", "v5", "lite"): 197e12,
    ("tpu", "v5e"): 197e12,
    ("tpu", "v4"): 275e12,
    ("tpu", "v3"): 123e12,
}


def peak_for_kind(device_kind: str) -> float | None:
    """The peak of the most specific PEAK_BF16 key whose words all occur in `device_kind`
    as whole words; None for an unknown device."""
    words = set(device_kind.lower().replace("-", " ").replace("_", " ").split())
    matches = [key for key in PEAK_BF16 if words.issuperset(key)]
    return PEAK_BF16[max(matches, key=len)] if matches else None


def peak_flops_per_device(override: float = 0.0, device=None) -> float | None:
    """Known peak for this device, `override` if set, else None (MFU not shown)."""
    if override:
        return float(override)
    return peak_for_kind((device or jax.devices()[0]).device_kind)


def compiled_flops(compiled) -> float | None:
    """FLOPs XLA's cost analysis counts for one call of a compiled function (None if
    unavailable). Not a model-FLOP count: on GPU it leaves out the matmuls XLA hands to
    cuBLAS/cuDNN as custom calls (an H200 gpt2_124m step: 1.35e12 counted, 1.05e13 model
    FLOPs), so MFU comes from the model formulas above, never from this."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost:
        return None
    flops = cost.get("flops")
    return float(flops) if flops and flops > 0 else None
