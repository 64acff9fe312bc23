"""Which parameters are weight matrices: what LoRA adapts, int8 quantizes and decoding
casts to the compute dtype. Biases and norm scales are not, whatever their rank
(attention biases are [heads, head_dim]; norm scales are [layers, D] under scan_layers).
"""
from __future__ import annotations

import numpy as np

NOT_MATRICES = ("bias", "scale")


def is_matrix(name, x) -> bool:
    """`x`, the leaf named `name` (the last key of its path), has >= 2 dims and is not a
    bias or a norm scale."""
    return np.ndim(x) >= 2 and str(name) not in NOT_MATRICES
