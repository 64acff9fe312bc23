"""What the train loop leaves in the workdir besides metrics: the sample grid at each eval,
the best checkpoints kept by `keep_best`; and what `genjax.sample` makes of --label and
--guidance for each image family (on the session's tiny runs)."""
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from genjax import checkpoint as ckpt_lib
from genjax import inference, sample, train
from genjax.metrics_writer import read_rows
from tests.families import tiny_config


@pytest.fixture(scope="module")
def evaluated_vae(tmp_path_factory, data_dir):
    """A 4-step VAE run evaluated at steps 1-3, a checkpoint every step, keeping the latest
    one plus the best one by the *largest* eval bits/dim (a step the latest-k rule drops)."""
    workdir = tmp_path_factory.mktemp("evaluated_vae")
    config = tiny_config("vae", **{
        "total_steps": 4, "log_every_steps": 1, "eval_every_steps": 1, "eval_batches": 1,
        "final_eval_batches": 1, "ckpt_every_steps": 1, "keep_checkpoints": 1,
        "keep_best": 1, "best_metric": "eval/elbo_bpd", "best_mode": "max",
        "sample.grid_samples": 4})
    train.train(config, str(workdir))
    return workdir


def test_train_loop_writes_a_sample_grid_at_each_eval_and_at_the_end(evaluated_vae):
    from PIL import Image
    assert sorted(os.listdir(evaluated_vae / "samples")) == [f"step_{s}.png" for s in (1, 2, 3, 4)]
    from genjax.image_grid import grid as tile
    png = np.asarray(Image.open(evaluated_vae / "samples" / "step_4.png"))
    blank = tile(np.zeros((4, 32, 32, 1), np.float32))  # 4 samples, shown at 2x
    assert png.shape[:2] == (2 * blank.shape[0], 2 * blank.shape[1])
    assert png.std() > 0  # samples, not a blank image


def test_keep_best_keeps_the_best_evaluated_step_and_the_latest(evaluated_vae):
    evals = {r["step"]: r["eval/elbo_bpd"] for r in read_rows(evaluated_vae / "metrics.jsonl")
             if "eval/elbo_bpd" in r}
    assert sorted(evals) == [1, 2, 3]
    worst = max(evals, key=evals.get)  # best_mode=max
    kept = ckpt_lib.Checkpointer(str(evaluated_vae), read_only=True).all_steps()
    assert kept == sorted({worst, 4}), (evals, kept)


@pytest.mark.parametrize("family", ["diffusion", "vae", "gan"])
def test_sample_cli_label_and_guidance_reach_the_sampler(family, tiny_run, tmp_path):
    from PIL import Image
    loaded = inference.load(str(tiny_run(family)))
    assert loaded.meta["data"]["class_names"][7] == "Sneaker"
    flags = dict(workdir=str(tiny_run(family)), prompt=None, num_samples=4, guidance=3.0,
                 steps=2, seed=0, best_of=1, min_confidence=0.0)

    def grid(name, **kw):
        out = str(tmp_path / f"{name}.png")
        assert sample.sample_images(loaded, SimpleNamespace(**{**flags, **kw}, out=out)) == out
        with open(out + ".json") as f:
            return np.asarray(Image.open(out)), json.load(f)

    by_name, meta = grid("name", label="sneaker")
    by_index, _ = grid("index", label="7")
    other, other_meta = grid("other", label="0")
    assert (meta["target_class"], other_meta["target_class"]) == (7, 0)
    assert meta["guidance"] == 3.0 and meta["label"] == "sneaker"
    np.testing.assert_array_equal(by_name, by_index)  # the name is resolved to its index
    assert not np.array_equal(by_index, other)        # the class reaches the model
    unguided, _ = grid("unguided", label="7", guidance=0.0)
    if family == "diffusion":  # guidance 0 = the unconditional model: other images
        assert not np.array_equal(by_index, unguided)
    else:  # documented as ignored by the VAE and the GAN
        np.testing.assert_array_equal(by_index, unguided)


def test_a_sample_run_that_rejects_every_image_leaves_the_earlier_grid_and_record(
        tiny_run, tmp_path, capsys):
    loaded = inference.load(str(tiny_run("gan")))
    out = tmp_path / "grid.png"
    flags = dict(workdir=str(tiny_run("gan")), prompt=None, label=None, num_samples=2,
                 seed=0, best_of=1, out=str(out), guidance=None, steps=None)
    uniform = lambda x: np.full((len(x), 10), 0.1)  # noqa: E731  (confidence 0.1 each)
    sample.sample_images(loaded, SimpleNamespace(**flags, min_confidence=0.0),
                         probs_fn=uniform)
    before = {p: p.read_bytes() for p in (out, tmp_path / "grid.png.json")}
    assert sample.sample_images(loaded, SimpleNamespace(**{**flags, "seed": 1},
                                                        min_confidence=0.5),
                                probs_fn=uniform) is None
    assert "all 2 samples were rejected" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in before} == before

def test_keep_best_by_a_metric_the_eval_does_not_report_is_a_config_error(tmp_path, data_dir):
    from genjax.errors import ConfigError
    config = tiny_config("vae", **{"total_steps": 2, "eval_every_steps": 1, "eval_batches": 1,
                                   "keep_best": 1, "best_metric": "eval/loss",
                                   "sample.grid_samples": 0})
    with pytest.raises(ConfigError, match=r"best_metric='eval/loss'.*'eval/elbo_bpd'"):
        train.train(config, str(tmp_path))
