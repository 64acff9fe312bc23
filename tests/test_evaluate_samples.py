"""Specification of `python -m genjax.evaluate --samples=FILE` (samples made anywhere) and
of the shipped feature-net weights (genjax/evaluators/{sample_files, feature_net,
ship_feature_net}.py).

Real data stands in for a peer's samples: held-out Fashion-MNIST test images must score at
the real-vs-real floor, held-out Shakespeare at the text floors. The feature net is the
tiny preset of configs/fmnist_classifier.py, trained once per session (tests/conftest.py),
copied into a temporary cache and shipped (exported) into a temporary weights folder, which
the evaluators then use.
"""
import json
import os
import shutil

import numpy as np
import pytest

from configs import fmnist_classifier
from genjax import train
from genjax.data import data_card
from genjax.errors import UserError
from genjax.evaluate import evaluate_samples
from genjax.evaluators import cas, feature_net, sample_files, ship_feature_net
from tests.subproc import assert_one_line_error, run_module
from tests.families import one_error_line

IMAGE_SETTINGS = [  # the tiny feature net; sizes that take seconds
    "image_quality.feature_preset='tiny'", "image_quality.num_real=2000",
    "image_quality.kid_subset_size=200", "image_quality.kid_subsets=20",
    "novelty.feature_preset='tiny'", "novelty.num_train=4000", "novelty.num_test=1000"]


@pytest.fixture(scope="module")
def data_cfg(data_dir):
    return fmnist_classifier.get_config("tiny").data


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("genjax_cache") / "feature_net")


@pytest.fixture(scope="module")
def trained(data_cfg, cache_dir, copy_tiny_feature_net):
    """The session's tiny net in this module's cache (its cache folder is a finished run)."""
    copy_tiny_feature_net(cache_dir)
    return feature_net.load_feature_net(data_cfg, preset="tiny", cache_dir=cache_dir,
                                        train_fn=train.train)


@pytest.fixture(scope="module")
def shipped(trained, cache_dir, tmp_path_factory):
    """The tiny net exported as shipped weights: the weights folder."""
    out = str(tmp_path_factory.mktemp("weights"))
    ship_feature_net.export(trained.directory, "tiny", out, cache_dir=cache_dir)
    return out


@pytest.fixture(scope="module")
def test_images(data_cfg):
    """Test images 0..5999 as a peer would save them: uint8 [N, 28, 28] + labels."""
    from genjax.data.image_loader import ImageData
    x, y = cas.real_split(ImageData(data_cfg, global_batch_size=8, seed=0), "test", 6000)
    u8 = np.round((x[:, 2:30, 2:30, 0] + 1) * 127.5).astype(np.uint8)  # undo the 32x32 pad
    return u8, y, x


def load_json(path):
    with open(path) as f:
        return json.load(f)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)


# ------------------------------------------------------------------ shipped weights
def test_shipped_weights_reproduce_the_trained_net_and_their_check(trained, shipped,
                                                                   data_cfg, cache_dir):
    weights, meta = feature_net.shipped_paths("tiny", shipped)
    info = load_json(meta)
    assert info["sha256"] == data_card.sha256_file(weights) and info["preset"] == "tiny"
    assert info["checksum"] == feature_net.locate(data_cfg, "tiny", cache_dir)[1]
    assert info["test_accuracy"] == trained.test_accuracy
    net = feature_net.load_feature_net(data_cfg, preset="tiny", cache_dir=cache_dir,
                                       weights_dir=shipped)
    assert net.origin == {"source": "shipped", "sha256": info["sha256"],
                          "file": "fmnist_classifier_tiny.msgpack"}
    assert trained.origin["source"] == "trained here"
    x = np.random.RandomState(0).uniform(-1, 1, (40, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(net.features(x), trained.features(x), rtol=1e-6, atol=1e-6)
    from genjax.data.image_loader import ImageData
    check = ship_feature_net.features_check(net, ImageData(data_cfg, global_batch_size=1,
                                                           seed=0))
    for key in ("sum", "abs_sum", "first", "last"):
        np.testing.assert_allclose(check[key], info["features_check"][key], rtol=1e-4)


def test_shipped_weights_of_another_recipe_fall_back_to_training(trained, shipped, data_cfg,
                                                                  cache_dir, tmp_path,
                                                                  monkeypatch):
    for name in os.listdir(shipped):
        shutil.copy(os.path.join(shipped, name), tmp_path)
    meta = feature_net.shipped_paths("tiny", str(tmp_path))[1]
    info = load_json(meta)
    write_json(meta, {**info, "checksum": "0" * 64})  # another dataset/recipe
    monkeypatch.setattr(feature_net, "_LOADED", {})
    net = feature_net.load_feature_net(data_cfg, preset="tiny", cache_dir=cache_dir,
                                       weights_dir=str(tmp_path))
    assert net.origin == {"source": "trained here", "directory": trained.directory}


def test_a_tampered_weights_file_fails_the_sha256_check(shipped, data_cfg, cache_dir,
                                                        tmp_path, monkeypatch):
    for name in os.listdir(shipped):
        shutil.copy(os.path.join(shipped, name), tmp_path)
    weights = feature_net.shipped_paths("tiny", str(tmp_path))[0]
    with open(weights, "r+b") as f:                               # one bit of one byte
        f.seek(os.path.getsize(weights) // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0x01]))
    monkeypatch.setattr(feature_net, "_LOADED", {})
    with one_error_line(UserError, match="sha256") as e:
        feature_net.load_feature_net(data_cfg, preset="tiny", cache_dir=cache_dir,
                                     weights_dir=str(tmp_path))
    assert weights in str(e.value)


def test_shipped_feature_net_features_checksum(data_dir, tmp_path):
    """The package's cpu weights give the features recorded when they were exported: the
    same samples score the same on every machine. Updating the recorded numbers is only
    legitimate together with new weights (python -m genjax.evaluators.ship_feature_net)."""
    weights, meta = feature_net.shipped_paths("cpu", os.path.join(
        os.path.dirname(feature_net.__file__), "weights"))
    if not os.path.exists(meta):
        pytest.skip(f"no shipped cpu feature net ({meta} is absent)")
    from genjax.data.image_loader import ImageData
    info = load_json(meta)
    data_cfg = fmnist_classifier.get_config("cpu").data
    net = feature_net.load_feature_net(data_cfg, preset="cpu", cache_dir=str(tmp_path),
                                       weights_dir=os.path.dirname(weights))
    assert net.origin["source"] == "shipped", (
        "the shipped json's recipe+dataset checksum is not this data's: "
        f"{info['checksum']} vs {feature_net.locate(data_cfg, 'cpu', str(tmp_path))[1]}")
    check = ship_feature_net.features_check(net, ImageData(data_cfg, global_batch_size=1,
                                                           seed=0))
    for key in ("sum", "abs_sum", "first", "last"):
        np.testing.assert_allclose(check[key], info["features_check"][key], rtol=1e-4,
                                   err_msg=key)


# ------------------------------------------------------------------ images
def test_28x28_files_are_padded_as_the_loader_pads_real_images(test_images, tmp_path,
                                                               data_cfg):
    from genjax.data.image_loader import ImageData
    u8, y, x = test_images
    path = str(tmp_path / "s.npz")
    np.savez(path, images=u8[:50], labels=y[:50])
    data = ImageData(data_cfg, global_batch_size=8, seed=0)
    got = sample_files.for_data(sample_files.read(path), data)
    np.testing.assert_array_equal(got.images, x[:50])
    np.testing.assert_array_equal(got.labels, y[:50])
    np.savez(path, images=(x[:50, ..., 0] * 127.5 + 127.5).round().astype(np.uint8))
    got32 = sample_files.for_data(sample_files.read(path), data)  # 32x32 used as they are
    np.testing.assert_array_equal(got32.images, x[:50])
    assert got32.labels is None


@pytest.mark.slow
def test_real_test_images_score_at_the_floor(test_images, shipped, tmp_path, monkeypatch):
    """Test images 4000..5999 (not in the 2000-image reference) are real images the
    model-free pipeline must score like the floor's real training images. Between draws of
    2,000 real images the tiny net's fid_fmnist varies by about +-0.3 (0.13..0.54 measured
    against a floor of 0.48): hence the margins."""
    monkeypatch.setenv(feature_net.WEIGHTS_ENV, shipped)
    u8, y, _ = test_images
    path = str(tmp_path / "peer.npz")
    np.savez(path, images=u8[4000:6000], labels=y[4000:6000])
    out = evaluate_samples(path, settings=IMAGE_SETTINGS)
    assert set(out["results"]) == {"image_quality", "novelty"}
    assert "cas" in out["skipped"] and "--only" in out["skipped"]["cas"]
    q = out["results"]["image_quality"]
    m, f = q["metrics"], q["floors"]
    assert q["details"]["num_samples"] == 2000
    assert q["details"]["feature_net_origin"]["source"] == "shipped"
    assert m["fid_fmnist"] < 2 * f["fid_fmnist"] + 0.1, (m, f)
    for key in ("precision", "recall"):
        assert abs(m[key] - f[key]) < 0.08, (key, m, f)
    acc = load_json(feature_net.shipped_paths("tiny", shipped)[1])["test_accuracy"]
    assert abs(m["conditional_accuracy"] - acc) < 0.12, (m, acc)
    nov = out["results"]["novelty"]
    assert nov["metrics"]["near_copies"] < 0.05
    assert out["report_md"] == str(tmp_path / "peer.npz.eval" / "report.md")
    report = load_json(out["report_json"])
    assert report["run"]["samples"] == path and report["run"]["labels"] is True
    with open(out["report_md"]) as f:
        md = f.read()
    assert "| image_quality/fid_fmnist |" in md and "cas (it trains" in md


# ------------------------------------------------------------------ text
@pytest.mark.slow
def test_held_out_shakespeare_scores_at_the_text_floors(data_dir, tmp_path):
    """Held-out plays (the validation split) at other offsets than the floor's excerpts."""
    from genjax import config_lib, families
    from genjax.evaluate import DEFAULT_CONFIGS, ROOT
    config = config_lib.load_file(os.path.join(ROOT, DEFAULT_CONFIGS["text"]))
    data = families.get(config.family).make_data(config, process_index=0, process_count=1)
    held_out = data.text("validation")  # the floor's excerpts start at 0, len/15, ...
    step = len(held_out) // 16
    pieces = [held_out[i * step + step // 2:][:400] for i in range(16)]  # ... these between
    path = tmp_path / "peer.txt"
    path.write_text("\n---\n".join(pieces))
    out = evaluate_samples(str(path), out_dir=str(tmp_path / "report"))
    assert set(out["results"]) == {"text"} and "model" in out["skipped"]["likelihood"]
    r = out["results"]["text"]
    assert r["details"]["samples"] == pieces
    m, f = r["metrics"], r["floors"]
    assert abs(m["word_share"] - f["word_share"]) < 0.03, (m, f)
    assert m["word_share"] > 0.9 and m["memorised_share"] < 0.05
    assert os.path.isfile(tmp_path / "report" / "report.md")


def test_text_file_formats(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("first\nsample\n---\nsecond\n\n---  \n\n---\n")
    assert sample_files.read(str(txt)).texts == ["first\nsample", "second\n"]
    crlf = tmp_path / "crlf.txt"  # a file written on Windows reads the same
    crlf.write_bytes(txt.read_bytes().replace(b"\n", b"\r\n"))
    assert sample_files.read(str(crlf)).texts == ["first\nsample", "second\n"]
    jl = tmp_path / "a.jsonl"
    jl.write_text('{"text": "one"}\n\n{"text": "two\\nlines"}\n{"text": ""}\n')
    assert sample_files.read(str(jl)).texts == ["one", "two\nlines", ""]


# ------------------------------------------------------------------ bad files
def _bad_files(root):
    """{name: (file, text the error line must contain)}."""
    x = np.zeros((4, 28, 28), np.uint8)
    files = {
        "float": ("f.npz", dict(images=x.astype(np.float32)), "float32"),
        "flat": ("n.npz", dict(images=np.zeros(4, np.uint8)), "shape [4]"),
        "channels5": ("c.npz", dict(images=np.zeros((4, 28, 28, 5), np.uint8)), "[4, 28, 28, 5]"),
        "size": ("s.npz", dict(images=np.zeros((4, 20, 20), np.uint8)), "20x20"),
        "zero": ("z.npz", dict(images=np.zeros((0, 28, 28), np.uint8)), "no samples"),
        "labels_len": ("l.npz", dict(images=x, labels=np.zeros(3, np.int32)), "one per image"),
        "labels_range": ("r.npz", dict(images=x, labels=np.array([0, 1, 2, 10])), "0..9"),
    }
    out = {}
    for name, (fname, arrays, needle) in files.items():
        np.savez(os.path.join(root, fname), **arrays)
        out[name] = (fname, needle)
    raw = {"corrupt": ("k.npz", b"PK\x03\x04 not a zip", "not a readable .npz"),
           "empty": ("e.txt", b"", "no samples"),
           "utf8": ("u.txt", b"fine\n\xff\xfe bad\n", "line 2 is not valid UTF-8"),
           "json": ("j.jsonl", b'{"text": "a"}\n\n{"text": oops}\n', "line 3 is not valid JSON"),
           "deep": ("d.jsonl", b"[" * 100_000 + b"\n", "line 1 nests its JSON too deeply"),
           "surrogate": ("h.jsonl", b'{"text": "ROMEO \\ud800 x"}\n', "lone surrogate")}
    np.savez(os.path.join(root, "few.npz"), images=x[:3])  # k-NN radii (pr_k 3) need 4
    out["few"] = ("few.npz", "image_quality.num_samples=3")
    for name, (fname, blob, needle) in raw.items():
        with open(os.path.join(root, fname), "wb") as f:
            f.write(blob)
        out[name] = (fname, needle)
    os.makedirs(os.path.join(root, "folder.npz"))
    out["folder"] = ("folder.npz", "is a folder, not a file")
    return out


BAD = ["float", "flat", "channels5", "size", "zero", "labels_len", "labels_range", "corrupt",
       "empty", "utf8", "json", "deep", "surrogate", "few", "folder"]


def test_every_bad_file_is_one_user_error_and_writes_nothing(tmp_path, data_dir):
    bad = _bad_files(str(tmp_path))
    assert sorted(bad) == sorted(BAD)
    before = sorted(os.listdir(tmp_path))
    for case, (fname, needle) in bad.items():
        with pytest.raises(UserError) as e:
            evaluate_samples(str(tmp_path / fname))
        assert needle in str(e.value) and "\n" not in str(e.value), (case, str(e.value))
        assert sorted(os.listdir(tmp_path)) == before, case


def test_settings_asking_for_more_samples_than_the_file_holds_write_nothing(tmp_path):
    (tmp_path / "t.txt").write_text("one\n---\ntwo\n")
    with pytest.raises(UserError, match=r"^text.num_samples=50: the file has 2 samples$"):
        evaluate_samples(str(tmp_path / "t.txt"), settings=["text.num_samples=50"])
    assert sorted(os.listdir(tmp_path)) == ["t.txt"]


@pytest.mark.parametrize("case", ["float", "size", "json"])  # a subprocess each: ~10 s
def test_a_bad_file_on_the_command_line_is_one_line_and_exit_code_2(case, tmp_path, data_dir):
    fname, needle = _bad_files(str(tmp_path))[case]
    before = sorted(os.listdir(tmp_path))
    proc = run_module("genjax.evaluate", f"--samples={tmp_path / fname}",
                      env_extra={"GENJAX_DATA_DIR": data_dir})
    assert_one_line_error(proc, needle)
    assert sorted(os.listdir(tmp_path)) == before


def test_params_with_a_samples_file_is_one_line_and_exit_code_2(tmp_path, data_dir):
    """A file of samples has no params: --params there was silently ignored."""
    (tmp_path / "t.txt").write_text("one\n---\ntwo\n")
    proc = run_module("genjax.evaluate", f"--samples={tmp_path / 't.txt'}", "--params=raw",
                      env_extra={"GENJAX_DATA_DIR": data_dir})
    assert_one_line_error(proc, "--params goes with --workdir")
    assert sorted(os.listdir(tmp_path)) == ["t.txt"]
