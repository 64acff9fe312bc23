"""Peak FLOP/s per device (dense bf16, vendor datasheets) for model-FLOPs utilisation."""
from __future__ import annotations

import jax

# device_kind substring -> peak dense bf16 FLOP/s. Sources: NVIDIA H100/H200/A100
# datasheets (SXM, without sparsity); Google Cloud TPU system-architecture pages.
PEAK_BF16 = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "TPU v6": 918e12,
    "TPU v5p": 459e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v4": 275e12,
    "TPU v3": 123e12,
}


def peak_flops_per_device(override: float = 0.0, device=None) -> float | None:
    """Known peak for this device, `override` if set, else None (MFU not shown)."""
    if override:
        return float(override)
    kind = (device or jax.devices()[0]).device_kind
    for key, value in PEAK_BF16.items():
        if key.lower() in kind.lower():
            return value
    return None


def compiled_flops(compiled) -> float | None:
    """FLOPs XLA counts for one call of a compiled function (None if unavailable)."""
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
