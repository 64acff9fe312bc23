"""A bad shared config value is one error line naming the key, raised before the run
touches its workdir; every preset genjax ships lies inside the domains."""
import glob
import importlib
import json
import os
import shutil

import orbax.checkpoint as ocp
import pytest

from genjax import config_lib, train
from genjax import workdir as workdir_lib
from genjax.errors import ConfigError, UserError
from tests.families import run_config, one_error_line
from tests.subproc import ROOT


def test_every_preset_of_every_shipped_config_is_inside_the_domains():
    checked = []
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))):
        module = importlib.import_module("configs." + os.path.basename(path)[:-3])
        for preset in getattr(module, "PRESETS", None) or [None]:
            config_lib.check_shared(module.get_config(preset))
            checked.append(f"{os.path.basename(path)}:{preset}")
    assert len(checked) >= 30, checked  # every family's tiny / cpu / gpu, the LM's scales


# key (dotted) -> (a value outside its domain, the nearest value inside)
OUTSIDE_AND_EDGE = {
    "total_steps": (-1, 0), "batch_size": (0, 1), "log_every_steps": (0, 1),
    "eval_every_steps": (-1, 0), "eval_batches": (0, 1), "final_eval_batches": (-1, 0),
    "ckpt_every_steps": (0, 1), "keep_checkpoints": (0, 1), "keep_best": (-1, 0),
    "max_consecutive_skips": (0, 1), "seed": (2**32, 2**32 - 1), "spike_decay": (1.0, 0.5),
    "optim.lr": (-1e-3, 0.0), "optim.warmup_steps": (-1, 0), "optim.accum_steps": (0, 1),
    "optim.clip_norm": (-1.0, 0.0), "optim.ema_decay": (1.0, 0.9999),
    "optim.min_lr_ratio": (1.5, 1.0), "optim.b2": (1.0, 0.999),
    "compute_dtype": ("float16", "bfloat16"), "on_nan": ("ignore", "rollback"),
    "best_mode": ("lowest", "max"), "optim.name": ("lion", "sgd"),
    "optim.schedule": ("step", "constant"), "lora.alpha": (0.0, 0.5),  # alpha 0: no gradient
}


@pytest.mark.parametrize("key", tuple(OUTSIDE_AND_EDGE))
def test_a_value_outside_its_domain_is_refused_by_name_and_its_edge_accepted(key):
    outside, edge = OUTSIDE_AND_EDGE[key]
    with pytest.raises(ConfigError) as e:
        config_lib.check_shared(run_config("lm", **{key: outside}))
    assert str(e.value).startswith(f"config.{key}={outside!r}: "), str(e.value)
    config_lib.check_shared(run_config("lm", **{key: edge}))


def test_every_offending_key_is_named_in_one_line_with_optimizer_groups():
    config = run_config("gan", **{"total_steps": -5, "optim.lr": -1.0,
                                  "optim.groups.discriminator.every": 0,
                                  "optim.groups.discriminator.lr": -2e-4})
    with pytest.raises(ConfigError) as e:
        config_lib.check_shared(config)
    message = str(e.value)
    assert "\n" not in message
    for name in ("config.total_steps=-5", "config.optim.lr=-1.0",
                 "config.optim.groups.discriminator.every=0",
                 "config.optim.groups.discriminator.lr=-0.0002"):
        assert name in message, message


def test_a_bad_value_fails_train_before_the_workdir_exists(tmp_path):
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match="config.ckpt_every_steps=0"):
        train.train(run_config("lm", ckpt_every_steps=0), str(workdir))
    assert not workdir.exists()


def test_a_bad_model_value_found_in_setup_leaves_no_folder_it_made_and_keeps_the_rest(
        tmp_path):
    """config.model.size is checked when the model is built, after the data (its vocab)
    and the checkpoint folder: the folders that run made go, a user's files stay."""
    bad = run_config("lm", **{"model.size": "bogus"})
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match="config.model.size='bogus': choose one of"):
        train.train(bad, str(workdir))
    assert not workdir.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="config.model.size='bogus'"):
        train.train(bad, str(mine))
    assert sorted(os.listdir(mine)) == ["notes.txt"]


def test_a_workdir_or_out_that_is_a_file_is_one_error_and_the_file_is_kept(tmp_path):
    """genjax.train --workdir; the --out of genjax.quantize / lora merge (a new folder),
    of genjax.scan_convert (a folder without checkpoints) and of genjax.sample (a file)."""
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    with pytest.raises(UserError, match="--workdir=.* is a file, not a directory"):
        train.train(run_config("lm"), str(afile))
    with pytest.raises(UserError, match="--out=.* is a file; choose a new folder"):
        workdir_lib.refuse_nonempty(str(afile))
    with pytest.raises(UserError, match="--out=.* is a file, not a directory"):
        workdir_lib.write_run(str(afile), 1, None, None, {}, {})
    # genjax.sample --out=FILE/grid.png (or .npz)
    with pytest.raises(UserError, match="a file stands where its folder should be"):
        workdir_lib.make_parent(str(afile / "grid.png"))
    assert afile.read_text() == "keep me"


def test_a_run_refused_after_opening_its_checkpoints_closes_them_and_deletes_nothing(
        tiny_run, tmp_path, monkeypatch):
    """Resuming a workdir that holds another model fails after the checkpoint manager is
    open; the manager is closed before the error leaves train (its threads would otherwise
    race the interpreter's exit and print a traceback under the error line), and with
    keep_checkpoints=1 nothing is deleted."""
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run("lm"), workdir)
    before = sorted(os.listdir(workdir / "checkpoints"))
    opened, closed = [], []
    init, close = ocp.CheckpointManager.__init__, ocp.CheckpointManager.close
    monkeypatch.setattr(ocp.CheckpointManager, "__init__",
                        lambda self, *a, **k: (opened.append(self), init(self, *a, **k))[1])
    monkeypatch.setattr(ocp.CheckpointManager, "close",
                        lambda self: (closed.append(self), close(self))[1])
    other = run_config("lm", **{"keep_checkpoints": 1,
                                "model.num_layers": run_config("lm").model.num_layers + 1})
    with pytest.raises(UserError, match="different model"):
        train.train(other, str(workdir))
    assert opened and all(any(m is c for c in closed) for m in opened)
    assert sorted(os.listdir(workdir / "checkpoints")) == before == ["3", "6"]


def test_a_resume_whose_optimizer_state_changed_shape_is_one_line_and_writes_nothing(
        tiny_run, tmp_path):
    """accum_steps 1 -> 2 wraps the optimizer in MultiSteps: its state no longer fits.
    One line naming the key; config.json and run_meta.json stay the saved run's (they
    were rewritten with the refused settings)."""
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run("lm"), workdir)
    before = {f: (workdir / f).read_text() for f in ("config.json", "run_meta.json")}
    steps = run_config("lm").total_steps
    other = run_config("lm", **{"optim.accum_steps": 2, "total_steps": steps + 2})
    with pytest.raises(UserError, match=r"^the checkpoint's optimizer state has another "
                       r"structure .*optim.accum_steps: 1 -> 2.*init_from=") as e:
        train.train(other, str(workdir))
    assert "\n" not in str(e.value)
    assert {f: (workdir / f).read_text() for f in before} == before


def test_a_resume_that_fails_to_compile_leaves_the_runs_records_as_they_were(tiny_run, tmp_path):
    """loss_chunk=24 does not divide the context (32): the step fails when it is traced,
    after the state was restored. config.json and run_meta.json are written once a step
    has run, so they still describe the run that made the checkpoints."""
    from genjax.errors import ConfigError
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run("lm"), workdir)
    before = {f: (workdir / f).read_text() for f in ("config.json", "run_meta.json")}
    steps = run_config("lm").total_steps
    other = run_config("lm", **{"model.loss_chunk": 24, "total_steps": steps + 2})
    with pytest.raises(ConfigError, match="loss_chunk=24"):
        train.train(other, str(workdir))
    assert {f: (workdir / f).read_text() for f in before} == before
    train.train(run_config("lm", **{"model.loss_chunk": 24}), str(workdir))  # no step to take
    assert {f: (workdir / f).read_text() for f in before} == before
    train.train(run_config("lm", total_steps=steps + 2), str(workdir))  # a good resume writes
    assert json.loads((workdir / "config.json").read_text())["total_steps"] == steps + 2


def _parse(argv):
    from absl import flags
    from ml_collections import config_flags
    from genjax import cli
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True)
    return cli.parse_flags(["prog", *argv], fv)


# ml_collections loads --config files with importlib's deprecated load_module()
@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
def test_a_missing_config_file_and_an_unknown_preset_are_one_line_each():
    with one_error_line(ConfigError) as e:
        _parse(["--config=configs/no_such_config.py"])
    assert "No such file" in str(e.value), str(e.value)
    assert "configs/no_such_config.py" in str(e.value)
    with pytest.raises(ConfigError) as e:
        _parse(["--config=configs/lm_shakespeare.py:huge"])
    assert str(e.value) == ("flag --config=configs/lm_shakespeare.py:huge: unknown preset "
                            "'huge'; choose one of ['cpu', 'gpt2', 'gpt2_124m', 'gpt2_1b', "
                            "'gpu', 'llama_1b', 'llama_7b', 'tiny']"), str(e.value)


# family, a model key outside its range, the start of the one-line error
MODEL_KEYS = [
    ("lm", {"model.max_len": 0}, "Transformer.max_len=0: must be >= 1"),
    ("lm", {"model.dropout": 1.5}, "Transformer.dropout=1.5: must be in [0, 1)"),
    ("lm", {"model.num_heads": 3}, "Transformer.embed_dim=32 is not divisible by num_heads=3"),
    ("lm", {"model.size": "huge"}, "config.model.size='huge': choose one of"),
    ("diffusion", {"model.width": 0}, "UNet.width=0: must be >= 1"),
    ("diffusion", {"model.channel_mult": ()}, "UNet.channel_mult=(): one multiplier"),
    ("gan", {"model.loss": "wasserstein"}, "config.model.loss='wasserstein': choose one of"),
]


@pytest.mark.parametrize("family,override,start", MODEL_KEYS,
                         ids=[f"{f}-{next(iter(o))}" for f, o, _ in MODEL_KEYS])
def test_a_model_key_outside_its_range_is_a_config_error(family, override, start):
    """ConfigError, which the command line prints as one `error:` line (exit 2); a
    ValueError would print a traceback."""
    from genjax import assemble, sharding
    from tests.families import tiny_config
    config = tiny_config(family, **override)
    with pytest.raises(ConfigError) as e:
        parts = assemble.assemble(config, sharding.make_mesh(config.mesh))
        parts.init_state()
    assert str(e.value).startswith(start), str(e.value)


def test_a_run_puts_back_the_sigterm_handler_and_a_run_inside_another_keeps_its(
        tiny_run, tmp_path):
    """genjax.sample and genjax.evaluate train a feature net in-process, and evaluators
    train classifiers inside a run: after train() the process's SIGTERM handler is the one
    before it, and a run inside another leaves the outer run's handler, which a SIGTERM
    still reaches (it used to be replaced for good: the outer run never stopped)."""
    import signal
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run("lm"), workdir)
    import threading
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set from the main thread only")
    before = signal.getsignal(signal.SIGTERM)
    outer = train._SigtermFlag().install()
    try:
        assert train._SigtermFlag.active is outer  # no earlier run left its handler
        handler = signal.getsignal(signal.SIGTERM)
        train.train(run_config("lm"), str(workdir))  # resumes, no step left: a whole call
        assert signal.getsignal(signal.SIGTERM) is handler
        signal.raise_signal(signal.SIGTERM)
        assert outer.raised
    finally:
        outer.uninstall()
    assert signal.getsignal(signal.SIGTERM) is before
    train.train(run_config("lm"), str(workdir))
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_fallback_past_an_unreadable_meta_still_checks_the_model(tiny_run, tmp_path):
    """The newest step's meta cannot be read, so the early check has nothing to compare:
    the resume falls back to the step before, whose meta must then be compared (it used to
    train the changed model on the old params)."""
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run("lm"), workdir)
    steps = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
    assert len(steps) >= 2
    (workdir / "checkpoints" / str(steps[-1]) / "meta" / "metadata").write_text("garbage")
    other = run_config("lm", **{"model.activation": "gelu_exact",
                                "total_steps": run_config("lm").total_steps + 2})
    with pytest.raises(UserError, match="different model"):
        train.train(other, str(workdir))
