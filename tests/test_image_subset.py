"""Specification of the class subset of image data (`config.data.classes`,
genjax/data/image_loader.py): every split holds only the chosen classes, with their
original label ids; names and indices are interchangeable; a bad name is one error line
listing the choices; the evaluators' feature net still learns (and is cached for) the whole
dataset, while its real features are cached per subset.

On the real Fashion-MNIST: the first use in a new data dir reads every label (~1 min on 2
busy cores; then cached). GENJAX_TEST_DATA_DIR=~/.cache/genjax/tfds reuses a prepared copy.
"""
import types

import numpy as np
import pytest
from ml_collections import ConfigDict

from genjax import config_lib
from genjax.data import image_builders
from genjax.data.idx import read_idx
from genjax.data.image_loader import ImageData
from genjax.errors import ConfigError
from genjax.evaluators import feature_net
from tests import subproc


def data_cfg(classes=()) -> ConfigDict:
    """The image configs' data section (config_lib.set_image_data) with `classes`."""
    c = ConfigDict({"data": {}})
    config_lib.set_image_data(c)
    c.data.classes = classes
    return c.data


def raw_labels(split: str) -> np.ndarray:
    """The split's labels straight from the IDX file (not through the loader)."""
    folder = image_builders.find_fashion_mnist()
    stem = image_builders.FASHION_MNIST_FILES[split][1]
    return read_idx(image_builders._idx_file(folder, stem)).astype(np.int64)


@pytest.fixture(scope="module")
def sneakers(data_dir):
    return ImageData(data_cfg(("Sneaker",)), global_batch_size=64, seed=0, include_index=True)


def test_one_class_gives_only_its_label_in_every_split(sneakers):
    want = {s: np.flatnonzero(raw_labels(s) == 7) for s in ("train", "test")}
    assert sneakers.class_names[7] == "Sneaker" and sneakers.classes == (7,)
    assert sneakers.num_examples("train") == len(want["train"]) == 6000
    assert sneakers.num_examples("test") == len(want["test"]) == 1000
    it = sneakers.train_iterator()
    for _ in range(3):
        batch = next(it)
        assert batch["label"].tolist() == [7] * 64  # the original id, not 0
        assert set(batch["index"].tolist()) <= set(want["train"].tolist())
    seen = []
    for batch in sneakers.eval_batches("test", 256):
        keep = batch["mask"] > 0
        assert (batch["label"][keep] == 7).all()
        seen += batch["index"][keep].tolist()
    assert sorted(seen) == want["test"].tolist()  # each Sneaker test image once, nothing else
    assert sneakers.meta()["classes"] == ["Sneaker"]
    assert sneakers.card["splits"] == {"train": 6000, "test": 1000}
    assert len(sneakers.meta()["class_names"]) == 10  # a conditional model keeps 10 labels


def test_two_classes_by_name_and_by_index_give_the_same_data(data_dir):
    def first(classes):
        data = ImageData(data_cfg(classes), global_batch_size=32, seed=3)
        return (data.classes, data.num_examples("train"), next(data.train_iterator()),
                next(iter(data.eval_batches("test", 32))))
    by_name = first(("Sneaker", "Bag"))
    # the command line's --config.data.classes=(Bag,7) arrives as the string "(Bag,7)"
    for other in [(8, 7), ("(Bag,7)",)]:
        got = first(other)
        assert got[:2] == by_name[:2] == ((7, 8), 12000), other
        for a, b in zip(got[2:], by_name[2:]):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{other} {key}")
    assert set(by_name[2]["label"].tolist()) == {7, 8}


def test_unknown_class_is_one_error_line_listing_the_classes(data_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"no class 10 .* 9 'Ankle boot'"):
        ImageData(data_cfg((10,)), global_batch_size=8, seed=0)
    proc = subproc.run_module("genjax.train", "--config=configs/diffusion_fmnist.py:tiny",
                              f"--workdir={tmp_path / 'run'}",
                              "--config.data.classes=(Sneakers,)")
    subproc.assert_one_line_error(proc, "config.data.classes", "'Sneakers'",
                                  "0 'T-shirt/top'", "7 'Sneaker'", "9 'Ankle boot'")


def test_feature_net_identity_ignores_the_subset(data_dir, tmp_path):
    assert "classes" not in feature_net.DATA_KEYS
    assert feature_net.classifier_config(data_cfg(("Sneaker",)), "tiny").data.classes == ()
    cache = str(tmp_path)
    whole = feature_net.locate(data_cfg(), "tiny", cache)
    assert feature_net.locate(data_cfg(("Sneaker",)), "tiny", cache) == whole
    assert whole[3]["splits"] == {"train": 60000, "test": 10000}
    # nets built before config.data.classes existed keep their checksum (and their cache)
    config, identity = whole[2], whole[3]
    old = config_lib.to_dict(config)
    del old["data"]["classes"]
    assert feature_net.checksum(ConfigDict(old), identity) == whole[1]


def test_real_features_are_cached_per_subset(sneakers, data_dir, tmp_path):
    """Two subsets with the same split and count must not share a cached file: the
    Sneaker reference set (fid_fmnist "against Sneaker test images") is Sneakers only."""
    net = types.SimpleNamespace(directory=str(tmp_path),  # a stand-in for FeatureNet
                                features=lambda x: x.reshape(len(x), -1)[:, 300:308])
    whole = ImageData(data_cfg(), global_batch_size=8, seed=0)
    real = feature_net.FeatureNet.real_features
    f_all, y_all = real(net, whole, "test", 100)
    f_sub, y_sub = real(net, sneakers, "test", 100)
    assert len(set(y_all.tolist())) == 10 and y_sub.tolist() == [7] * 100
    assert not np.array_equal(f_all, f_sub)
    again, y_again = real(net, sneakers, "test", 100)  # read back from the cache
    np.testing.assert_array_equal(again, f_sub)
    assert y_again.tolist() == [7] * 100
