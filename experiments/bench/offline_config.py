"""The config keys genjax.train resolves from the data, filled without reading any: the
benches time models on random inputs of the shapes the real data would give."""
from __future__ import annotations


def fill_data_keys(config) -> None:
    """In an unlocked config, each data-derived key left 0 gets the value of genjax's own
    data: a 128-symbol character vocabulary, Fashion-MNIST's 1 channel and 10 classes."""
    if "vocab_size" in config.model and not config.model.vocab_size:
        config.model.vocab_size = 128
    if "channels" in config.data and not config.data.channels:
        config.data.channels = 1
    if "num_classes" in config.model and not config.model.num_classes:
        config.model.num_classes = 10
