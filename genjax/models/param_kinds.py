"""Which parameters are weight matrices: what LoRA adapts, int8 quantizes and decoding
casts to the compute dtype. Biases and norm scales are not, whatever their rank
(attention biases are [heads, head_dim]; norm scales are [layers, D] under scan_layers).
And which axes of a kernel are its inputs (`kernel_axes`): the ones LoRA's A contracts
and int8's absmax runs over.
"""
from __future__ import annotations

import numpy as np

NOT_MATRICES = ("bias", "scale")


def is_matrix(name, x) -> bool:
    """`x`, the leaf named `name` (the last key of its path), has >= 2 dims and is not a
    bias or a norm scale."""
    return np.ndim(x) >= 2 and str(name) not in NOT_MATRICES


def kernel_axes(names: tuple | None, ndim: int) -> tuple[int, int]:
    """(batch axes, input axes) of a kernel [*batch, *in, *out] by its logical axis names:
    a leading "layers" axis (layers under scan) is a batch axis; attention output kernels
    [heads, kv, D] take (heads, kv) as inputs, kernels with heads elsewhere ([D, (3,)
    heads, kv]) the first axis, Dense and Conv kernels all but the last."""
    batch = 1 if names and names[0] == "layers" else 0
    rest = tuple(names[batch:]) if names else None
    if rest and "heads" in rest:
        return batch, 2 if rest.index("heads") == 0 else 1
    return batch, ndim - batch - 1
