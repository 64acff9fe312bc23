"""`genjax.sample --out=X.npz`: every sample of an image family as uint8 + the class each
was asked for, in the format `genjax.evaluate --samples` reads (tiny GAN, no dataset)."""
import json
import types

import jax
import numpy as np
import pytest

from genjax import sample
from genjax.errors import UserError
from genjax.evaluators import sample_files
from genjax.image_grid import to_uint8
from tests.test_image_families import fake_batch, init, tiny

CLASSES = [f"c{i}" for i in range(10)]


@pytest.fixture(scope="module")
def loaded():
    c = tiny("gan", class_conditional=True)
    mod, model, params, state = init("gan", c, fake_batch(c, 4))
    return types.SimpleNamespace(family=mod, model=model, params=params, model_state=state,
                                 config=c, step=7, meta={"data": {"class_names": CLASSES}})


def opts(out, **kw):
    base = dict(workdir="W", out=str(out), num_samples=7, batch_size=3, seed=5, label=None,
                prompt=None, best_of=1, min_confidence=0.0, guidance=None, steps=None,
                temperature=None, prior=None)
    return types.SimpleNamespace(**{**base, **kw})


def test_npz_holds_every_sample_with_its_class_in_the_evaluators_format(loaded, tmp_path):
    out = tmp_path / "s.npz"
    sample.sample_images(loaded, opts(out))
    got = np.load(out)
    assert got["images"].shape == (7, 32, 32, 1) and got["images"].dtype == np.uint8
    np.testing.assert_array_equal(got["labels"], [0, 1, 2, 3, 4, 5, 6])
    # chunk 1 (samples 3..5) is the sampler's own draw with seed + 1 and those classes
    x = loaded.family.sample_images(loaded.model, loaded.params, loaded.config,
                                    jax.random.PRNGKey(6), 3, label=np.array([3, 4, 5]))
    np.testing.assert_array_equal(got["images"][3:6], to_uint8(np.asarray(x)))
    meta = json.loads((tmp_path / "s.npz.json").read_text())
    assert meta["num_samples"] == 7 and meta["images_per_s"] > 0 and meta["step"] == 7
    read = sample_files.read(str(out))
    assert read.kind == "images" and read.has == ("images", "labels")


def test_npz_of_one_class_labels_every_sample_with_it(loaded, tmp_path):
    sample.sample_images(loaded, opts(tmp_path / "c.npz", label="c4", num_samples=4))
    np.testing.assert_array_equal(np.load(tmp_path / "c.npz")["labels"], [4] * 4)


@pytest.mark.parametrize("kw", [{"best_of": 8}, {"min_confidence": 0.5}, {"batch_size": 0}])
def test_grid_only_options_and_bad_batch_are_one_error_and_write_nothing(loaded, tmp_path, kw):
    with pytest.raises(UserError):
        sample.sample_images(loaded, opts(tmp_path / "x.npz", **kw))
    assert not list(tmp_path.iterdir())
