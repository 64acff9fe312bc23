"""Image data: IDX files, the Fashion-MNIST / image-folder builders, and ImageData batches."""
import json
import logging
import os
import re
import shutil
import time

import numpy as np
import pytest
from ml_collections import ConfigDict

from genjax.data import image_builders
from genjax.errors import UserError
from genjax.data.idx import IdxFormatError, read_idx, write_idx
from genjax.data.image_loader import ImageData


def data_cfg(**kw) -> ConfigDict:
    cfg = dict(name="fashion_mnist", source_dir="", image_folder="", image_size=0, channels=0,
               data_dir="")
    cfg.update(kw)
    return ConfigDict(cfg)


# ------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("name,array", [
    ("a-idx3-ubyte.gz", np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)),
    ("b-idx1-ubyte", np.array([0, 9, 3], np.uint8)),
    ("c-idx2-int.gz", np.array([[-5, 70000], [1, 2]], np.int32)),
    ("d-idx1-float", np.array([0.5, -1.25], np.float32)),
])
def test_idx_round_trip(tmp_path, name, array):
    path = tmp_path / name
    write_idx(path, array)
    out = read_idx(path)
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def test_truncated_idx_names_the_file_and_the_size(tmp_path):
    images = np.zeros((60, 28, 28), np.uint8)
    plain = tmp_path / "train-images-idx3-ubyte"
    write_idx(plain, images)
    plain.write_bytes(plain.read_bytes()[:16 + 1000])  # header + 1000 pixels
    with pytest.raises(IdxFormatError, match=r"expected 47040 bytes .* found 1000") as e:
        read_idx(plain)
    assert str(plain) in str(e.value)

    gz = tmp_path / "t10k-images-idx3-ubyte.gz"
    write_idx(gz, images)
    gz.write_bytes(gz.read_bytes()[:-20])  # a cut gzip stream
    with pytest.raises(ValueError, match="corrupt gzip") as e:
        read_idx(gz)
    assert str(gz) in str(e.value)

    bad = tmp_path / "bad-magic"
    bad.write_bytes(b"\x01\x00\x08\x01" + b"\x00" * 8)
    with pytest.raises(IdxFormatError, match="bad magic"):
        read_idx(bad)
    bad.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    with pytest.raises(IdxFormatError, match="unknown dtype code 0x07"):
        read_idx(bad)


# ------------------------------------------------------------------------- tiny Fashion-MNIST
def _tiny_fashion_mnist(folder):
    """50 train / 20 test random images with planted exact duplicates:
    train[10] == train[3]; test[5] == test[2]; test[8] == train[20]; test[9] == train[21]
    (with a different label: one label conflict)."""
    rng = np.random.default_rng(0)
    x_tr = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    x_te = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    y_tr = (np.arange(50) % 10).astype(np.uint8)
    y_te = (np.arange(20) % 10).astype(np.uint8)
    x_tr[10] = x_tr[3]
    x_te[5] = x_te[2]
    x_te[8], x_te[9] = x_tr[20], x_tr[21]
    y_te[8], y_te[9] = y_tr[20], (y_tr[21] + 1) % 10
    os.makedirs(folder, exist_ok=True)
    for stem, arr in [("train-images-idx3-ubyte", x_tr), ("train-labels-idx1-ubyte", y_tr),
                      ("t10k-images-idx3-ubyte", x_te), ("t10k-labels-idx1-ubyte", y_te)]:
        write_idx(os.path.join(folder, stem + ".gz"), arr)
    return {"train": (x_tr, y_tr), "test": (x_te, y_te)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config for the tiny set padded to 32x32, its arrays, the prepared builder)."""
    root = tmp_path_factory.mktemp("tiny_fmnist")
    arrays = _tiny_fashion_mnist(str(root / "source"))
    cfg = data_cfg(source_dir=str(root / "source"), image_size=32, data_dir=str(root / "tfds"))
    builder = image_builders.prepare_images("fashion_mnist", cfg.data_dir,
                                            source_dir=cfg.source_dir)
    return cfg, arrays, builder


def _data(cfg, batch=8, seed=0, **kw):
    return ImageData(cfg, global_batch_size=batch, seed=seed, include_index=True, **kw)


def test_tiny_build_labels_class_names_and_pixels(tiny):
    cfg, arrays, builder = tiny
    assert json.loads((builder.data_path / "class_names.json").read_text())[0] == "T-shirt/top"
    data = _data(cfg)
    assert data.class_names == list(image_builders.FASHION_MNIST_CLASSES)
    assert (data.num_examples("train"), data.num_examples("test")) == (50, 20)
    assert data.image_shape == (32, 32, 1)
    assert data.meta()["image_shape"] == [32, 32, 1]
    json.dumps(data.meta())
    x_te, y_te = arrays["test"]
    for batch in data.eval_batches("test", 8):
        for img, label, i, m in zip(batch["image"], batch["label"], batch["index"],
                                    batch["mask"]):
            if m:
                assert label == y_te[i]
                np.testing.assert_allclose(img[2:30, 2:30, 0], x_te[i] / 127.5 - 1.0,
                                           atol=1e-6)


def test_building_logs_no_notice_about_its_own_config(tiny, caplog):
    """TFDS warns of every builder config not declared ahead; genjax's are named after
    their sources' fingerprint, so that notice only preceded every error line (absl)."""
    cfg = tiny[0]
    with caplog.at_level(logging.INFO):
        image_builders.prepare_images("fashion_mnist", cfg.data_dir, source_dir=cfg.source_dir)
    assert not [r for r in caplog.records if "custom data configuration" in r.getMessage()]


def test_duplicate_report_finds_the_planted_duplicates(tiny):
    report = image_builders.read_json(tiny[2], "duplicates.json")
    assert report["train"]["groups"] == 1 and report["train"]["redundant"] == 1
    assert report["train"]["examples"] == [[3, 10]]
    assert report["test"]["examples"] == [[2, 5]]
    assert report["test_in_train"]["count"] == 2
    assert report["test_in_train"]["label_conflicts"] == 1
    assert report["test_in_train"]["examples"] == [{"test": 8, "train": [20]},
                                                   {"test": 9, "train": [21]}]
    card = _data(tiny[0]).card
    assert card["duplicates"]["test_in_train"]["count"] == 2
    assert card["splits"] == {"train": 50, "test": 20}
    json.dumps(card)


def test_images_in_range_padded_with_background(tiny):
    cfg, _, _ = tiny
    batch = next(_data(cfg).train_iterator())
    assert batch["image"].shape == (8, 32, 32, 1) and batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32 and batch["label"].shape == (8,)
    grey = (batch["image"] + 1.0) * 127.5  # back to 0..255: whole grey levels, both ends
    np.testing.assert_allclose(grey, np.round(grey), atol=1e-3)
    assert grey.min() == pytest.approx(0.0) and 0.0 < grey.max() <= 255.0 + 1e-3
    border = np.concatenate([batch["image"][:, :2].ravel(), batch["image"][:, :, -2:].ravel()])
    assert (border == -1.0).all()
    native = next(_data(data_cfg(**{**cfg.to_dict(), "image_size": 0})).train_iterator())
    assert native["image"].shape == (8, 28, 28, 1)
    rgb = next(_data(data_cfg(**{**cfg.to_dict(), "channels": 3})).train_iterator())
    assert rgb["image"].shape == (8, 32, 32, 3)


def _take(it, n):
    return [next(it)["index"].copy() for _ in range(n)]


def test_same_seed_same_batches_and_each_epoch_is_a_permutation(tiny):
    cfg, _, _ = tiny
    a = _take(_data(cfg, seed=1).train_iterator(), 12)
    b = _take(_data(cfg, seed=1).train_iterator(), 12)
    c = _take(_data(cfg, seed=2).train_iterator(), 12)
    assert all((x == y).all() for x, y in zip(a, b))
    assert any((x != y).any() for x, y in zip(a, c))
    stream = np.concatenate(a)          # 96 positions: epoch 1 = 50, then epoch 2
    assert sorted(stream[:50]) == list(range(50))
    assert (stream[50:96] != stream[:46]).any()  # a new order in the second epoch


def test_resume_mid_epoch_gives_identical_batches(tiny):
    cfg, _, _ = tiny
    it = _data(cfg).train_iterator()
    _take(it, 3)
    state = json.loads(json.dumps(it.get_state()))
    expected = _take(it, 5)             # crosses the epoch boundary (50 / 8 = 6.25)
    resumed = _data(cfg).train_iterator()
    resumed.set_state(state)
    assert all((x == y).all() for x, y in zip(expected, _take(resumed, 5)))
    with pytest.raises(UserError, match="another stream .*global_batch_size 8 -> 4"):
        _data(cfg, batch=4).train_iterator().set_state(state)


def test_processes_get_disjoint_slices_of_the_same_global_batches(tiny):
    cfg, _, _ = tiny
    single = _take(_data(cfg, batch=8).train_iterator(), 6)
    p0 = _take(_data(cfg, batch=8, process_index=0, process_count=2).train_iterator(), 6)
    p1 = _take(_data(cfg, batch=8, process_index=1, process_count=2).train_iterator(), 6)
    assert p0[0].shape == (4,)
    assert not set(np.concatenate(p0)) & set(np.concatenate(p1))  # 48 of 50: one epoch
    for s, a, b in zip(single, p0, p1):
        assert sorted(s) == sorted(np.concatenate([a, b]))


@pytest.mark.parametrize("count", [1, 2])
def test_eval_batches_cover_each_test_example_once(tiny, count):
    cfg, _, _ = tiny
    seen, shapes = [], set()
    for p in range(count):
        data = _data(cfg, process_index=p, process_count=count)
        batches = list(data.eval_batches("test", batch_size=8))
        assert len(batches) == 3                     # ceil(20 / 8), on every process
        for batch in batches:
            shapes.add(batch["image"].shape)
            seen += batch["index"][batch["mask"] == 1].tolist()
            assert (batch["index"][batch["mask"] == 0] == -1).all()
    assert shapes == {(8 // count, 32, 32, 1)}
    assert sorted(seen) == list(range(20))
    assert len(list(_data(cfg).eval_batches("test", 8, max_batches=2))) == 2


def test_missing_source_names_the_install_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        ImageData(data_cfg(source_dir=str(tmp_path / "nowhere"), data_dir=str(tmp_path)),
                  global_batch_size=8, seed=0)


# ------------------------------------------------------------------------- real Fashion-MNIST
@pytest.fixture(scope="session")
def real_fmnist(data_dir):
    """The Debian Fashion-MNIST, built once per session into the shared test data dir."""
    try:
        image_builders.find_fashion_mnist()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    start = time.perf_counter()
    builder = image_builders.prepare_images("fashion_mnist", data_dir)
    print(f"\nFashion-MNIST ready in {time.perf_counter() - start:.1f}s: {builder.data_dir}")
    return builder


@pytest.mark.slow
def test_real_fashion_mnist(real_fmnist, data_dir):
    data = ImageData(data_cfg(image_size=32, data_dir=data_dir), global_batch_size=16, seed=0)
    assert (data.num_examples("train"), data.num_examples("test")) == (60000, 10000)
    assert data.class_names[9] == "Ankle boot" and data.image_shape == (32, 32, 1)
    batch = next(data.train_iterator())
    assert batch["image"].shape == (16, 32, 32, 1) and set(batch["label"]) <= set(range(10))
    report = image_builders.read_json(real_fmnist, "duplicates.json")
    # Golden: the Debian files (dataset-fashion-mnist 0.0~git20200523) hold no exact duplicate
    # images, checked independently with np.unique(axis=0). Update only if the source changes.
    assert [report[k].get("groups", report[k].get("count")) for k in
            ("train", "test", "test_in_train")] == [0, 0, 0]


# ------------------------------------------------------------------------- image folder
def _write_pngs(folder, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    for c, cls in enumerate(["cats", "dogs"]):
        os.makedirs(os.path.join(folder, cls), exist_ok=True)
        for i in range(10):
            pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8) // 2 + 100 * c
            Image.fromarray(pixels).save(os.path.join(folder, cls, f"{i:02d}.png"))
    open(os.path.join(folder, "README.txt"), "w").close()  # ignored


def test_image_folder_builder(tmp_path):
    pytest.importorskip("PIL")
    folder = str(tmp_path / "pets")
    _write_pngs(folder)
    cfg = data_cfg(name="image_folder", image_folder=folder, image_size=16, channels=1,
                   data_dir=str(tmp_path / "tfds"))
    data = _data(cfg, batch=4)
    assert data.class_names == ["cats", "dogs"]
    assert (data.num_examples("train"), data.num_examples("test")) == (18, 2)
    assert data.image_shape == (16, 16, 1)
    batch = next(data.train_iterator())
    assert batch["image"].shape == (4, 16, 16, 1)
    builder = image_builders.prepare_images(folder, cfg.data_dir, image_size=16, channels=1)
    files = image_builders.read_json(builder, "files.json")
    for batch in data.eval_batches("train", 4):
        for image, label, i, m in zip(batch["image"], batch["label"], batch["index"],
                                      batch["mask"]):
            if m:
                assert files["train"][i].split(os.sep)[0] == data.class_names[label]
                # cats' pixels are 0..127 (mean 63.5), dogs' 100..227 (mean 163.5)
                mean_grey = float(np.mean((image + 1.0) * 127.5))
                assert abs(mean_grey - (63.5, 163.5)[label]) < 10, (label, mean_grey)
    # Another folder (one byte differs) or another size never shares the prepared data.
    other = str(tmp_path / "pets2")
    shutil.copytree(folder, other)
    _write_pngs(other, seed=1)
    b2 = image_builders.prepare_images(other, cfg.data_dir, image_size=16, channels=1)
    b3 = image_builders.prepare_images(folder, cfg.data_dir, image_size=8, channels=3)
    assert len({builder.data_dir, b2.data_dir, b3.data_dir}) == 3
    assert b3.info.features["image"].shape == (8, 8, 3)


def test_a_16_bit_png_keeps_its_grey_levels(tmp_path):
    """PIL's "I;16" -> "L" clips at 255 (a ramp became black and white): value >> 8."""
    from PIL import Image

    from genjax.data.image_files import load_image
    ramp = (np.arange(256, dtype=np.uint16) * 256).reshape(16, 16)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")  # uint16: mode I;16
    x = load_image(str(tmp_path / "ramp.png"), 16, 1)
    np.testing.assert_array_equal(x[..., 0], np.arange(256).reshape(16, 16))


def test_an_image_folder_with_another_data_name_is_refused_not_ignored(tmp_path):
    """image_folder set but name left at fashion_mnist would train on Fashion-MNIST."""
    from genjax.errors import ConfigError
    with pytest.raises(ConfigError,
                       match="image_folder needs data.name=image_folder, not 'fashion_mnist'"):
        _data(data_cfg(image_folder=str(tmp_path), data_dir=str(tmp_path / "tfds")))


@pytest.mark.parametrize("damage", ["not_an_image", "truncated"])
def test_an_unreadable_image_in_a_folder_is_one_error_naming_it(tmp_path, damage):
    """genjax.data prints a ValueError as one `error:` line (exit 2)."""
    pytest.importorskip("PIL")
    folder = str(tmp_path / "pets")
    _write_pngs(folder)
    bad = os.path.join(folder, "dogs", "05.png")
    if damage == "not_an_image":
        with open(bad, "w") as f:
            f.write("not an image")
    else:
        with open(bad, "rb") as f:
            head = f.read(200)
        with open(bad, "wb") as f:
            f.write(head)
    with pytest.raises(ValueError, match=f"image {re.escape(bad)} cannot be read"):
        image_builders.prepare_images(folder, str(tmp_path / "tfds"), image_size=16,
                                      channels=1)


# ------------------------------------------------------------------------- TFDS catalog
def test_tfds_catalog_pass_through_with_mock_data(tmp_path):
    """tfds.testing.mock_data works without TensorFlow (tensorflow-datasets 4.9.10)."""
    import tensorflow_datasets as tfds
    cfg = data_cfg(name="mnist", image_size=32, data_dir=str(tmp_path))
    with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
        data = ImageData(cfg, global_batch_size=8, seed=0)
        assert data.class_names == [str(i) for i in range(10)]
        assert data.image_shape == (32, 32, 1)
        batch = next(data.train_iterator())
        assert batch["image"].shape == (8, 32, 32, 1) and batch["label"].dtype == np.int32
        assert sum(b["mask"].sum() for b in data.eval_batches("test", 16)) == 24


def test_rgb_to_grey_stays_on_the_256_levels_the_likelihoods_bin():
    """BT.601 luma of (10, 200, 30) is 123.81: the grey pixel is level 124, i.e.
    124 * 2 / 255 - 1, not a value between two of the decoder's bins."""
    from genjax.data.image_loader import to_model_images
    rgb = np.array([[[[10, 200, 30], [255, 255, 255]]]], np.uint8)       # [1, 1, 2, 3]
    grey = to_model_images(rgb, (1, 2, 1))
    np.testing.assert_array_equal(grey[0, 0, :, 0], np.float32([124, 255]) * (2 / 255) - 1)
