"""Evaluation: plug-in lookup, the likelihood evaluator, plots, report and the CLI.

One tiny LM is trained per module (likelihood during training on), then evaluated both
in-process and through `python -m genjax.evaluate`.
"""
import json
import math
import os
import types

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from genjax import config_lib, families, inference
from genjax import evaluators as ev
from genjax.errors import UserError
from genjax.data import shakespeare
from genjax.evaluators import likelihood, plots, report
from tests.subproc import assert_one_line_error, run_module


def read(path, mode="r"):
    """The whole file (closed again: no ResourceWarning)."""
    with open(path, mode) as f:
        return f.read()


def run_cli(*args):
    return run_module("genjax.evaluate", *args, timeout=600)


# ----------------------------------------------------------------------- a trained run
@pytest.fixture(scope="module")
def lm_run(tmp_path_factory, data_dir):
    """A tiny LM workdir whose training ran the likelihood evaluator at step 10."""
    from configs import lm_shakespeare
    from genjax.train import train
    config = lm_shakespeare.get_config("tiny")
    config.evals.likelihood.during_training = True
    workdir = str(tmp_path_factory.mktemp("eval_lm"))
    train(config, workdir)
    return workdir


@pytest.fixture(scope="module")
def ctx(lm_run):
    return ev.from_loaded(inference.load(lm_run, which="ema"), lm_run)


@pytest.mark.slow
def test_training_logs_evaluators_as_eval_name_key(lm_run):
    rows = [json.loads(line) for line in read(os.path.join(lm_run, "metrics.jsonl")).splitlines()]
    at10 = {k: v for r in rows if r["step"] == 10 for k, v in r.items()}
    # Same params (no EMA in tiny), same split, batches and batch size as the loop's eval:
    assert at10["eval/likelihood/validation/loss"] == pytest.approx(at10["eval/loss"], rel=1e-6)
    assert "eval/likelihood/test/bits_per_char" in at10
    assert not any(k.startswith("eval/text/") for k in at10)  # during_training=False


@pytest.mark.slow
def test_likelihood_matches_a_direct_computation(ctx):
    """loss = mean NLL of the targets (computed here in numpy); perplexity = exp(loss);
    bits/char = loss / ln 2 (char tokenizer: 1 char per token)."""
    s = likelihood.settings(splits=("validation", "nosuch"), max_batches=1, per_document=True)
    out = ev.normalize("likelihood", likelihood.evaluate(ctx, s))
    m = out["metrics"]

    nll = count = 0.0
    for batch in ctx.data.eval_batches("validation", int(ctx.config.batch_size), 1):
        logits = np.asarray(ctx.model.apply({"params": ctx.params}, batch["tokens"][:, :-1]),
                            np.float64)
        top = logits.max(-1, keepdims=True)
        logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
        target = np.take_along_axis(logp, batch["tokens"][:, 1:, None], -1)[..., 0]
        nll -= float((target * batch["mask"]).sum())
        count += float(batch["mask"].sum())
    assert m["validation/loss"] == pytest.approx(nll / count, rel=1e-5)
    assert m["validation/perplexity"] == pytest.approx(math.exp(m["validation/loss"]), rel=1e-9)
    assert m["validation/bits_per_char"] == pytest.approx(m["validation/loss"] / math.log(2))
    assert out["details"]["skipped_splits"] == ["nosuch"]
    assert "validation/tokens" not in m                          # counts go to details
    assert out["details"]["splits"]["validation"]["tokens"] == count
    docs = out["details"]["documents"]["validation"]
    assert [d["document"] for d in docs] == sorted(shakespeare.VALIDATION_PLAYS)
    assert all(d["bits_per_char"] == pytest.approx(d["loss"] / math.log(2)) for d in docs)
    assert "| julius-caesar |" in out["markdown"]


@pytest.mark.slow
def test_evaluate_cli_writes_the_report(lm_run):
    proc = run_cli(f"--workdir={lm_run}", "--num_samples=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out_dir = os.path.join(lm_run, "eval")
    md = read(os.path.join(out_dir, "report.md"))
    assert "| metric | value | real-vs-real floor |" in md
    for key in ("likelihood/test/perplexity", "text/distinct_2", "text/memorised_share",
                "text/longest_copied_chars"):
        assert f"| {key} |" in md
    rep = json.loads(read(os.path.join(out_dir, "report.json")))
    assert set(rep["evaluators"]) == {"likelihood", "text"}
    assert len(rep["evaluators"]["text"]["details"]["samples"]) == 3  # --num_samples
    assert rep["evaluators"]["text"]["floors"]["distinct_1"] > 0     # held-out excerpts
    for png in ("loss_curves.png", "metrics_family.png", "metrics_likelihood.png"):
        assert png in rep["plots"]
        assert read(os.path.join(out_dir, png), "rb")[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in md


def test_cli_unknown_evaluator_exits_2(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    assert_one_line_error(run_cli(f"--workdir={tmp_path}", "--only=likelihood,nope"),
                          "unknown evaluator 'nope'", "likelihood")


def test_cli_missing_workdir_exits_2(tmp_path):
    assert_one_line_error(run_cli(f"--workdir={tmp_path / 'absent'}"), "does not exist")


# ----------------------------------------------------------------------- lookup
def _config(family="lm", **evals):
    c = config_lib.base_config()
    c.family = family
    for name, s in evals.items():
        c.evals[name] = s
    return c


def test_lookup_errors_name_the_problem():
    with pytest.raises(UserError, match="unknown evaluator 'nope'.*available.*likelihood"):
        ev.get("nope")
    with pytest.raises(UserError, match="not an evaluator"):
        ev.get("plots")
    with pytest.raises(UserError, match="not a module name"):
        ev.get("../x")
    cfg = _config("vae", text=ConfigDict(dict(during_training=True)))
    vae = families.get("vae")
    with pytest.raises(UserError, match=r"'text' does not apply.*no sample_text / text_tokenizer"):
        ev.resolve(cfg, vae, ["text"])
    with pytest.raises(UserError, match="not configured.*configured: \\['text'\\]"):
        ev.resolve(cfg, vae, ["likelihood"])


def test_resolve_keeps_what_applies_and_during_training_filters():
    cfg = _config("vae", text=ConfigDict(dict(during_training=True)),
                  likelihood=ConfigDict(dict(during_training=True)))
    vae = families.get("vae")
    assert ev.resolve(cfg, vae) == ["likelihood"]      # the vae family samples no text
    assert ev.skipped(cfg, vae) == {"text": "the family has no sample_text / text_tokenizer"}
    cfg.evals.likelihood.during_training = False
    assert ev.during_training(cfg, vae) == []
    assert ev.resolve(config_lib.base_config(), vae) == []  # nothing configured


def test_normalize_checks_results():
    ok = ev.normalize("x", {"metrics": {"a": np.float32(0.5)}, "floors": {"a": 1}})
    assert ok == {"metrics": {"a": 0.5}, "floors": {"a": 1.0}, "figures": [], "markdown": "",
                  "details": {}}
    with pytest.raises(ValueError, match="floors \\['b'\\] have no metric"):
        ev.normalize("x", {"metrics": {"a": 1.0}, "floors": {"b": 1.0}})
    with pytest.raises(ValueError, match="figures not written"):
        ev.normalize("x", {"metrics": {}, "figures": ["/nonexistent.png"]})
    with pytest.raises(TypeError):
        ev.normalize("x", {"metrics": {}, "details": {"f": object()}})


def test_settings_reject_unknown_keys():
    assert likelihood.settings(max_batches=3).max_batches == 3
    with pytest.raises(KeyError, match="max_batch"):
        likelihood.settings(max_batch=3)


@pytest.mark.parametrize("key", ["max_batches", "batch_size"])
def test_a_negative_count_is_one_line_before_anything_runs(key):
    # likelihood.max_batches=-1 ran no batch and overwrote a good report with empty cells
    evals = {"likelihood": likelihood.settings(**{key: -1})}
    with pytest.raises(UserError, match=f"likelihood.{key}=-1: must be >= 0"):
        ev.check_settings(evals, ["likelihood"])
    ev.check_settings({"likelihood": likelihood.settings(**{key: 0})}, ["likelihood"])


def test_set_overrides_one_setting_and_names_what_is_wrong():
    from genjax.evaluate import apply_settings
    evals = _config("lm", likelihood=likelihood.settings()).evals
    apply_settings(evals, ["likelihood.max_batches=7", "likelihood.during_training=True"])
    assert evals.likelihood.max_batches == 7 and evals.likelihood.during_training is True
    for bad, needle in [("likelihood.max_batches", "<evaluator>.<key>=<value>"),
                        ("nope.max_batches=1", "not configured"),
                        ("likelihood.max_batch=1", "no setting 'max_batch'"),
                        ("likelihood.max_batches=many", "likelihood.max_batches=many")]:
        with pytest.raises(UserError, match=needle):
            apply_settings(evals, [bad])
    assert evals.likelihood.max_batches == 7  # nothing changed by the bad ones


def test_sample_images_batches_one_shape_and_cycles_labels(tmp_path):
    calls = []

    def sample_images(model, params, config, rng, n, label=None, model_state=None):
        calls.append(n)
        return np.broadcast_to(np.asarray(label, np.float32)[:, None, None, None] / 10,
                               (n, 2, 2, 1))

    family = types.SimpleNamespace(
        sample_images=sample_images,
        sample_labels=lambda config, n, label=None: (np.arange(n) % 3 if label is None
                                                     else np.full(n, label)))
    c = ev.EvalContext(config=_config("gan"), family=family, model=None, params=None,
                       model_state=None, meta={}, step=0, workdir=str(tmp_path),
                       out_dir=str(tmp_path / "eval"), which="raw", seed=0, data=None, parts=None)
    images, labels = c.sample_images(10, batch_size=4)
    assert calls == [4, 4, 4]                            # the last batch is trimmed, not resized
    assert labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert np.allclose(images[:, 0, 0, 0], labels / 10)  # image i was made for label i
    _, labels = c.sample_images(5, label=2)
    assert labels.tolist() == [2] * 5
    assert os.path.isdir(tmp_path / "eval")


def test_evaluators_share_one_pool_of_samples(tmp_path):
    """A second evaluator asking for the same (label, batch_size, seed) gets the same
    images; asking for more samples only the batches not drawn yet."""
    calls = []

    def sample_images(model, params, config, rng, n, label=None, model_state=None):
        calls.append(n)
        return np.asarray(jax.random.normal(rng, (n, 2, 2, 1)))

    family = types.SimpleNamespace(sample_images=sample_images,
                                   sample_labels=lambda config, n, label=None: np.arange(n) % 3)
    c = ev.EvalContext(config=_config("gan"), family=family, model=None, params=None,
                       model_state=None, meta={}, step=0, workdir=str(tmp_path),
                       out_dir=str(tmp_path / "eval"), which="raw", seed=0, data=None, parts=None)
    first, _ = c.sample_images(8, batch_size=4)
    again, _ = c.sample_images(6, batch_size=4)
    assert calls == [4, 4]                                  # nothing sampled the second time
    np.testing.assert_array_equal(again, first[:6])
    more, labels = c.sample_images(12, batch_size=4)
    assert calls == [4, 4, 4]                               # one new batch
    np.testing.assert_array_equal(more[:8], first)
    assert labels.tolist() == [i % 3 for i in range(12)]
    other_seed, _ = c.sample_images(8, batch_size=4, seed=1)
    assert not np.array_equal(other_seed, first)


# ----------------------------------------------------------------------- plots, report
@pytest.fixture
def metrics_file(tmp_path):
    rows = [{"step": s, "loss": 5.0 - 0.1 * s} for s in range(1, 11)]
    rows += [{"step": 5, "eval/loss": 4.8, "eval/tokens": 512, "eval/text/distinct_1": 0.4},
             {"step": 10, "eval/loss": 4.5, "eval/text/distinct_1": 0.5},
             {"step": 10, "eval/loss": 4.4}]  # step 10 logged again after a resume
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"step\": 11, \"lo")
    return str(path)


def test_read_metrics_keeps_the_last_value_of_a_step(metrics_file):
    series = plots.read_metrics(metrics_file)
    assert series["eval/loss"] == {5: 4.8, 10: 4.4}
    assert len(series["loss"]) == 10                     # the cut last line is skipped
    assert plots.eval_groups(series) == {"family": ["eval/loss"],
                                         "text": ["eval/text/distinct_1"]}


def test_a_line_of_bytes_that_are_not_utf8_is_skipped_like_a_cut_one(metrics_file):
    """A damaged block in metrics.jsonl drops its lines from the plots, never the report
    (was a UnicodeDecodeError traceback from genjax.evaluate)."""
    with open(metrics_file, "r+b") as f:
        f.write(b"\xff\xfe\xff")  # over the start of the step-1 row
    series = plots.read_metrics(metrics_file)
    assert sorted(series["loss"]) == list(range(2, 11))


def test_plots_are_written(metrics_file, tmp_path):
    out = tmp_path / "out"
    assert plots.loss_curves(metrics_file, str(out / "loss.png")) == str(out / "loss.png")
    written = plots.metrics_vs_step(metrics_file, str(out))
    assert sorted(os.path.basename(p) for p in written) == ["metrics_family.png",
                                                             "metrics_text.png"]
    bars = plots.precision_recall_bars({"model": {"precision": 0.6, "recall": 0.3},
                                        "real vs real": {"precision": 0.9, "recall": 0.8}},
                                       str(out / "pr.png"))
    for p in [str(out / "loss.png"), *written, bars]:
        assert read(p, "rb")[:8] == b"\x89PNG\r\n\x1a\n"
    assert plots.loss_curves(str(tmp_path / "none.jsonl"), str(out / "x.png")) is None
    samples = tmp_path / "samples"
    samples.mkdir()
    for step in (5, 20):  # numeric order, not lexicographic
        (samples / f"step_{step}.png").write_bytes(f"{step}".encode())
    grid = plots.latest_sample_grid(str(tmp_path), str(out))
    assert os.path.basename(grid) == "samples_step_20.png" and read(grid) == "20"


def test_report_table_and_links(tmp_path):
    fig = tmp_path / "eval" / "fig.png"
    fig.parent.mkdir()
    fig.write_bytes(b"png")
    results = {"img": {**ev.normalize("img", {"metrics": {"fid": 12.345678, "n": 12345.0},
                                              "floors": {"fid": 1.5}, "figures": [str(fig)],
                                              "markdown": "hello"}), "seconds": 1.0}}
    json_path, md_path = report.write_report(str(tmp_path / "eval"), {"step": 7}, results, [])
    md = read(md_path)
    assert "| img/fid | 12.35 | 1.5 |" in md
    assert "| img/n | 12,345 | \u2014 |" in md
    assert "![fig.png](fig.png)" in md and "hello" in md
    assert json.loads(read(json_path))["evaluators"]["img"]["figures"] == ["fig.png"]


def test_a_file_where_the_report_folder_goes_is_one_line_and_kept(tmp_path):
    (tmp_path / "eval").write_text("mine")  # was: FileExistsError from os.makedirs
    with pytest.raises(UserError, match="the report folder=.* is a file, not a directory"):
        ev.EvalContext(config=_config("gan"), family=None, model=None, params=None,
                       model_state=None, meta={}, step=0, workdir=str(tmp_path),
                       out_dir=str(tmp_path / "eval"), which="raw", seed=0, data=None,
                       parts=None)
    assert (tmp_path / "eval").read_text() == "mine"


def test_bits_per_char_divides_by_the_eval_splits_characters_per_token(monkeypatch):
    """BPE: 2 nats/token over 4 characters/token is 2 / ln 2 / 4 bits/char (every other test
    has 1 character/token, where * and / agree); the loop's eval (on config.eval_split)
    divides by that split's ratio, not the validation split's."""
    from types import SimpleNamespace
    from genjax import eval_sums, train
    from genjax.families import lm
    out = lm.finalize_eval({"loss": 200.0, "count": 100.0, "accuracy": 0.0}, chars_per_token=4.0)
    assert out["bits_per_char"] == pytest.approx(2.0 / math.log(2) / 4.0)
    assert out["bits_per_token"] == pytest.approx(2.0 / math.log(2))

    class Data:
        def eval_batches(self, split, batch_size, max_batches):
            return []

        def eval_kwargs(self, split="validation"):
            return {"chars_per_token": {"validation": 3.0, "test": 4.0}[split]}
    monkeypatch.setattr(eval_sums, "evaluate", lambda parts, params, state, batches, kw: kw)
    run = SimpleNamespace(config=SimpleNamespace(eval_split="test", batch_size=8), data=Data(),
                          parts=None, state=SimpleNamespace(params=None, model_state=None))
    assert train._eval(run, 1) == {"chars_per_token": 4.0}
