"""Image preference data (genjax/data/sample_image_preferences.py), its readers and its
reward classifier, as specifications.

Known answers: the kept pairs of a run at margin m are exactly those of the same run at
margin 0 whose gap is >= m, and their reward gap recomputed from the saved images with the
reward run's own forward pass (not the tool's code) is >= m; the card's counts and
checksums are the files'; a reward run that is the evaluators' feature net (recipe or
shipped weights), one with other class names, and a non-diffusion source are each one
line, nothing written; the DPO reader puts the winner in slot 0 and the loser in slot 1
with the prompt's label and resumes where it stopped; Diffusion-DPO's step-0 loss on its
batches is ln 2; winners.npz is what the image path's training reads, and only that.

Fashion-MNIST: GENJAX_TEST_DATA_DIR=~/.cache/genjax/tfds reuses a prepared copy.
"""
import json
import math
import os
import shutil

import jax
import numpy as np
import pytest
from flax import linen as nn
from flax import serialization
from ml_collections import ConfigDict

from configs import fmnist_reward_classifier
from genjax import config_lib, inference, train
from genjax.data import data_card, image_npz
from genjax.data import sample_image_preferences as sip
from genjax.data.captioned_images import CaptionedImageData
from genjax.data.image_builders import FASHION_MNIST_CLASSES
from genjax.data.image_loader import ImageData
from genjax.errors import ConfigError, UserError
from genjax.evaluators import feature_net, sample_files
from genjax.families import diffusion_dpo
from tests.families import tiny_config, one_error_line

NAMES = list(FASHION_MNIST_CLASSES)
SAMPLING = dict(k=3, prompts_per_class=1, heldout_prompts_per_class=1, steps=2, seed=0,
                batch_size=32)


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory, data_dir):
    """A 4-step run of configs/fmnist_reward_classifier.py:tiny (not the feature net)."""
    workdir = tmp_path_factory.mktemp("reward") / "run"
    c = fmnist_reward_classifier.get_config("tiny")
    c.unlock()
    c.update_from_flattened_dict({"total_steps": 4, "ckpt_every_steps": 4, "log_every_steps": 1,
                                  "final_eval_batches": 1, "optim.warmup_steps": 1,
                                  "mesh.data": 2})
    c.lock()
    train.train(c, str(workdir))
    return workdir


@pytest.fixture(scope="module")
def sampled(tmp_path_factory, tiny_run, reward_run):
    """(folder at margin 0, folder at the median gap of that run, the median)."""
    root = tmp_path_factory.mktemp("prefs")
    source = str(tiny_run("diffusion"))
    sip.sample_image_preferences(source, str(reward_run), str(root / "m0"), margin=0.0,
                                 **SAMPLING)
    r = image_npz.read(str(root / "m0" / "pairs_train.npz"), per_example=2)["rewards"]
    margin = float(np.median(r[:, 0].astype(np.float64) - r[:, 1]))  # as the tool subtracts
    sip.sample_image_preferences(source, str(reward_run), str(root / "med"), margin=margin,
                                 **SAMPLING)
    return root / "m0", root / "med", margin


def independent_rewards(reward_dir, images_u8, labels) -> np.ndarray:
    """p(label | image) from the reward run's own forward pass (not the tool's code)."""
    loaded = inference.load(str(reward_dir), which="raw")
    x = images_u8.astype(np.float32) / 127.5 - 1.0
    logits = loaded.model.apply({"params": loaded.params}, x)
    return np.asarray(jax.nn.softmax(logits, -1))[np.arange(len(x)), labels]


# ----------------------------------------------------------------------- ranking
def test_rank_takes_best_and_worst_first_on_ties_and_keeps_gaps_at_the_margin():
    r = np.array([[0.2, 0.9, 0.9, 0.1],    # best 1 (first of the tie), worst 3, gap 0.8
                  [0.5, 0.5, 0.5, 0.5],    # all tied: best == worst, never a pair
                  [0.25, 0.5, 0.375, 0.25],  # gap 0.25 (exact in binary): kept at 0.25 (>=)
                  [0.3, 0.34, 0.32, 0.31]])  # gap 0.04: below the margin
    best, worst, kept, gap = sip.rank(r, margin=0.25)
    assert best.tolist() == [1, 0, 1, 1] and worst.tolist() == [3, 0, 0, 0]
    np.testing.assert_allclose(gap, [0.8, 0.0, 0.25, 0.04])
    assert kept.tolist() == [True, False, True, False]
    assert sip.rank(r, margin=0.0)[2].tolist() == [True, False, True, True]  # ties: dropped
    assert sip.prompt_labels(3, 2).tolist() == [0, 1, 2, 0, 1, 2]


def test_reward_config_is_not_the_feature_net_recipe():
    for preset in fmnist_reward_classifier.PRESETS:
        c = fmnist_reward_classifier.get_config(preset)
        assert feature_net.recipe_preset(c) is None and c.seed == 1
    assert feature_net.recipe_preset(feature_net.classifier_config(
        fmnist_reward_classifier.get_config("cpu").data, "cpu")) == "cpu"


# ----------------------------------------------------------------------- sampling end to end
def test_kept_pairs_clear_the_margin_under_an_independent_reward(sampled, reward_run):
    m0, med, margin = sampled
    for split in ("train", "test"):
        every = image_npz.read(str(m0 / f"pairs_{split}.npz"), per_example=2)
        kept = image_npz.read(str(med / f"pairs_{split}.npz"), per_example=2)
        assert every["class_names"] == kept["class_names"] == NAMES
        gap0 = every["rewards"][:, 0].astype(np.float64) - every["rewards"][:, 1]
        want = gap0 >= margin  # same seed, same samples: the margin only filters
        if split == "train":  # margin = the median gap of train: some kept, some dropped
            assert 0 < want.sum() < len(want)
        np.testing.assert_array_equal(kept["images"], every["images"][want])
        np.testing.assert_array_equal(kept["labels"], every["labels"][want])
        n = len(kept["labels"])
        r = independent_rewards(reward_run, kept["images"].reshape(2 * n, 32, 32, 1),
                                np.repeat(kept["labels"], 2)).reshape(n, 2)
        np.testing.assert_allclose(r, kept["rewards"], atol=1e-5)
        assert np.all(r[:, 0] - r[:, 1] >= margin - 1e-5)


def test_card_counts_and_checksums_are_the_files(sampled, tiny_run, reward_run):
    _, med, margin = sampled
    card = data_card.read_card(str(med))
    assert card["pairing"]["margin"] == margin and card["sampling"]["k"] == 3
    assert card["source"]["workdir"] == str(tiny_run("diffusion"))
    assert card["reward"]["workdir"] == str(reward_run)
    assert len(card["reward"]["state_sha256"]) == 64
    for split in ("train", "test"):
        c, z = card["splits"][split], image_npz.read(str(med / f"pairs_{split}.npz"),
                                                     per_example=2)
        assert c["prompts"] == 10 and c["samples"] == 30 and c["pairs"] == len(z["labels"])
        assert c["prompts"] == c["pairs"] + c["dropped_below_margin"] + c["dropped_identical"]
        if c["pairs"]:
            assert c["mean_margin"] == pytest.approx(float(np.mean(
                z["rewards"][:, 0].astype(np.float64) - z["rewards"][:, 1])), abs=1e-6)
        assert c["mean_reward_worst"] <= c["mean_reward_all"] <= c["mean_reward_best"]
    winners = image_npz.read(str(med / "winners.npz"), per_example=1)
    assert winners["labels"].tolist() == list(range(10)) and card["winners"]["examples"] == 10
    assert card["winners"]["mean_reward"] == pytest.approx(float(winners["rewards"].mean()))
    given = sample_files.read(str(med / "winners.npz"))  # genjax.evaluate --samples reads it
    assert given.has == ("images", "labels") and len(given) == 10
    train_pairs = image_npz.read(str(med / "pairs_train.npz"), per_example=2)
    for img, label in zip(train_pairs["images"][:, 0], train_pairs["labels"]):  # a pair's
        assert (winners["images"][label] == img).all()  # winner is its prompt's winner
    for rel, info in card["files"].items():
        assert data_card.sha256_file(str(med / rel)) == info["sha256"]
    assert set(card["files"]) == {"pairs_train.npz", "pairs_test.npz", "winners.npz"}


# ----------------------------------------------------------------------- refusals
def _shipped(tmp_path, reward_run, monkeypatch):
    """A weights folder holding the reward run's params as the feature net's shipped ones."""
    folder = tmp_path / "weights"
    folder.mkdir()
    params = inference.load(str(reward_run), which="raw").params
    msgpack, _ = feature_net.shipped_paths("tiny", str(folder))
    with open(msgpack, "wb") as f:
        f.write(serialization.msgpack_serialize(jax.device_get(dict(params))))
    monkeypatch.setenv(feature_net.WEIGHTS_ENV, str(folder))
    return str(reward_run)


def _renamed(tmp_path, reward_run, monkeypatch):
    """A copy of the reward run whose checkpoint names other classes."""
    copy = tmp_path / "renamed"
    shutil.copytree(reward_run, copy)
    (meta_file,) = copy.glob("checkpoints/*/meta/metadata")
    meta = json.loads(meta_file.read_text())
    meta["data"]["class_names"] = NAMES[::-1]
    meta_file.write_text(json.dumps(meta))
    return str(copy)


@pytest.mark.parametrize("case, match", [
    ("recipe", "is the evaluators' feature net .*tiny"),
    ("shipped", "holds the evaluators' shipped feature-net weights"),
    ("classes", "classifies .*the diffusion run's classes are"),
    ("source", "is not a class-conditional diffusion run"),
])
def test_refusals_are_one_line_and_write_nothing(case, match, tmp_path, tiny_run, reward_run,
                                                 monkeypatch):
    source, reward = str(tiny_run("diffusion")), str(reward_run)
    if case == "recipe":
        reward = str(tiny_run("classifier"))  # configs/fmnist_classifier.py:tiny, seed 0
    elif case == "shipped":
        reward = _shipped(tmp_path, reward_run, monkeypatch)
    elif case == "classes":
        reward = _renamed(tmp_path, reward_run, monkeypatch)
    else:
        source = reward
    out = tmp_path / "out"
    with one_error_line(UserError, match=match):
        sip.sample_image_preferences(source, reward, str(out), **SAMPLING)
    assert not out.exists()


# ----------------------------------------------------------------------- readers
def _pairs_folder(path, n_train=6, n_test=3):
    """pairs_{train,test}.npz: pair i's winner is all 2i, its loser all 2i + 1 (uint8)."""
    path.mkdir()
    for split, n in (("train", n_train), ("test", n_test)):
        images = np.zeros((n, 2, 32, 32, 1), np.uint8)
        images[:, 0] = (2 * np.arange(n))[:, None, None, None]
        images[:, 1] = (2 * np.arange(n) + 1)[:, None, None, None]
        image_npz.write(str(path / f"pairs_{split}.npz"), images, np.arange(n) % 10, NAMES,
                        rewards=np.zeros((n, 2), np.float32))
    return str(path)


def _dpo_data(folder, batch_size=2):
    config = tiny_config("diffusion_dpo", **{"data.pairs": folder, "batch_size": batch_size})
    return config, diffusion_dpo.make_data(config, process_index=0, process_count=1)


def test_dpo_reader_puts_winner_then_loser_with_the_prompt_label_and_resumes(tmp_path):
    _, data = _dpo_data(_pairs_folder(tmp_path / "pairs"))
    it = data.train_iterator()
    seen = [next(it) for _ in range(2)]
    state = it.get_state()
    after = [next(it) for _ in range(2)]
    for batch in seen + after:
        x = batch["image"]
        assert x.shape == (2, 2, 32, 32, 1) and x.dtype == np.float32
        u8 = np.round((x + 1) * 127.5)  # back to the stored bytes
        np.testing.assert_allclose(x, u8 / 127.5 - 1, atol=1e-6)
        i = u8[:, 0, 0, 0, 0].astype(int) // 2  # the pair's index
        assert (u8[:, 0] == (2 * i)[:, None, None, None]).all()      # slot 0: its winner
        assert (u8[:, 1] == (2 * i + 1)[:, None, None, None]).all()  # slot 1: its loser
        assert batch["label"].tolist() == (i % 10).tolist()
    _, again = _dpo_data(str(tmp_path / "pairs"))
    it2 = again.train_iterator()
    it2.set_state(state)
    for want in after:
        got = next(it2)
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["label"], want["label"])
    other_dir = _pairs_folder(tmp_path / "other")  # same count, other images
    image_npz.write(os.path.join(other_dir, "pairs_train.npz"),
                    np.zeros((6, 2, 32, 32, 1), np.uint8), np.arange(6) % 10, NAMES)
    _, other = _dpo_data(other_dir)
    with pytest.raises(UserError, match="pairs_sha256"):  # other pairs: the position is void
        other.train_iterator().set_state(state)
    test = list(data.eval_batches("test", 4))
    assert [b["mask"].tolist() for b in test] == [[1, 1, 1, 0]]
    assert test[0]["label"][:3].tolist() == [0, 1, 2]


def test_diffusion_dpo_step_zero_loss_is_ln2_on_sampled_pairs(tmp_path):
    config, data = _dpo_data(_pairs_folder(tmp_path / "pairs"), batch_size=3)
    config.unlock()
    diffusion_dpo.resolve_config(config, data)
    config.lock()
    batch = jax.tree_util.tree_map(np.asarray, next(data.train_iterator()))
    model = diffusion_dpo.make_model(config)
    v = nn.meta.unbox(diffusion_dpo.init_variables(model, jax.random.key(0), batch, config))
    loss, _ = diffusion_dpo.loss_fn(v["params"], {"reference": v["reference"]}, batch,
                                    jax.random.key(1), model=model, config=config)
    assert float(loss) == np.float32(math.log(2))


@pytest.mark.parametrize("key, value, match", [
    ("diffusion_dpo.beta", 0.0, "diffusion_dpo.beta=0.0: must be > 0"),
    ("model.dropout", 0.1, "model.dropout=0.1: preference tuning scores the policy and")])
def test_settings_that_change_the_objective_are_one_error_line(tmp_path, key, value, match):
    config, data = _dpo_data(_pairs_folder(tmp_path / "pairs"), batch_size=3)
    config.unlock()
    section, name = key.split(".")
    config[section][name] = value
    with one_error_line(ConfigError, match=match):
        diffusion_dpo.resolve_config(config, data)


def _data_cfg(train_images: str) -> ConfigDict:
    c = ConfigDict({"data": {}})
    config_lib.set_image_data(c)
    c.data.train_images = train_images
    return c.data


def test_winners_are_what_training_reads_and_nothing_else(tmp_path, data_dir):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 1), dtype=np.uint8)
    labels = np.arange(12) % 10
    path = str(tmp_path / "winners.npz")
    image_npz.write(path, images, labels, NAMES)
    real = ImageData(_data_cfg(""), global_batch_size=4, seed=0)
    data = ImageData(_data_cfg(path), global_batch_size=4, seed=0, include_index=True)
    assert data.num_examples("train_images") == 12 and data.dataset == real.dataset
    for split in ("train", "test"):  # eval and the evaluators' real sets: the dataset's
        assert data.num_examples(split) == real.num_examples(split) == {"train": 60000,
                                                                        "test": 10000}[split]
    assert data.meta()["train_images"]["sha256"] == data_card.sha256_file(path)
    it, rows = data.train_iterator(), []
    for _ in range(3):  # one epoch: every winner once, as the loader converts it
        batch = next(it)
        rows += batch["index"].tolist()
        np.testing.assert_allclose(batch["image"], images[batch["index"]] / 127.5 - 1, atol=1e-6)
        assert batch["label"].tolist() == labels[batch["index"]].tolist()
    assert sorted(rows) == list(range(12))
    assert it.get_state()["train_images"] == data_card.sha256_file(path)  # resumes need it
    with pytest.raises(ConfigError, match="not supported with text conditioning"):
        CaptionedImageData(_data_cfg(path), global_batch_size=4, seed=0, max_words=8)
    image_npz.write(str(tmp_path / "renamed.npz"), images, labels, NAMES[::-1])
    with pytest.raises(ConfigError, match="has classes"):
        ImageData(_data_cfg(str(tmp_path / "renamed.npz")), global_batch_size=4, seed=0)
    image_npz.write(str(tmp_path / "small.npz"), images[:, :20, :20], labels, NAMES)
    with pytest.raises(ConfigError, match="images are 20x20x1"):
        ImageData(_data_cfg(str(tmp_path / "small.npz")), global_batch_size=4, seed=0)
