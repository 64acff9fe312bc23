"""Injected faults cost a run nothing: kills at any point (mid-save included), NaN batches
(halt or rollback), loss spikes, reused keys. Faults are injected with GENJAX_FAULTS
(genjax/faults.py); every kill is a real SIGKILL of a training subprocess."""
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genjax import config_lib, optim
from genjax.step import SpikeGuard, init_state, train_step
from tests import subproc
from tests.subproc import losses_by_step

# Every run here compiles the same train step (the schedule depends on total_steps): the
# compilation cache (tests/conftest.py) then makes each run cost little more than startup.
# Dropout (per-step RNG) and the loss-spike guard (state in TrainState.guard) are on, so
# the exact-resume comparisons cover them too.
TINY = ["--config=configs/lm_shakespeare.py:tiny", "--config.log_every_steps=1",
        "--config.eval_every_steps=0", "--config.final_eval_batches=1",
        "--config.total_steps=10", "--config.model.dropout=0.1", "--config.spike_k=6",
        "--config.spike_warmup=2"]
RESUME = [*TINY, "--config.ckpt_every_steps=3"]


def train(workdir, data_dir, *args, faults="", cache=True):
    env = subproc.env(GENJAX_DATA_DIR=data_dir, GENJAX_FAULTS=faults)
    if not cache:  # compiled from scratch: the comparison then covers fresh compilation
        env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    cmd = [sys.executable, "-m", "genjax.train", f"--workdir={workdir}", *args]
    return subproc.run(cmd, env)


def checksums(workdir, step):
    """Per-leaf bit checksums of the whole TrainState saved at `step`."""
    from genjax.checkpoint import Checkpointer
    return Checkpointer(str(workdir), read_only=True).read_meta(step)["checksums"]


def step_dirs(workdir):
    return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


# --------------------------------------------------------------------------- kills
@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """One uninterrupted run, compiled without the compilation cache; shared by all kills."""
    workdir = tmp_path_factory.mktemp("reference")
    proc = train(workdir, data_dir, *RESUME, cache=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


# (fault, finalised steps right after the kill, step the rerun resumes from)
KILLS = {
    "before_first_checkpoint": ("kill@2", [], None),
    "mid_save": ("kill_mid_save@6", ["3"], 3),       # save of 6 started, not finalised
    "right_after_a_finalised_save": ("kill_after_save@6", ["3", "6"], 6),
}
LAST = 10


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILLS))
def test_sigkill_then_rerun_equals_the_uninterrupted_run_bit_for_bit(
        point, reference, tmp_path, data_dir):
    fault, finalised, resumed_from = KILLS[point]
    killed = train(tmp_path, data_dir, *RESUME, faults=fault)
    assert killed.returncode == -9, killed.stderr[-3000:]
    on_disk = step_dirs(tmp_path) if (tmp_path / "checkpoints").exists() else []
    assert [s for s in on_disk if s.isdigit()] == finalised
    if point == "mid_save":  # orbax's temporary directory of the unfinished save ...
        assert [s for s in on_disk if "orbax-checkpoint-tmp" in s], on_disk
        # ... is removed when the run restarts (before step 6 is saved again, which
        # would replace it anyway): crash once more at step 4 and look.
        again = train(tmp_path, data_dir, *RESUME, faults="kill@4")
        assert again.returncode == -9 and "resumed from step 3\n" in again.stdout
        assert step_dirs(tmp_path) == ["3"]

    rerun = train(tmp_path, data_dir, *RESUME)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    if resumed_from is None:  # nothing finalised: a fresh start, and not an error
        assert "resumed from" not in rerun.stdout
    else:
        assert f"resumed from step {resumed_from}\n" in rerun.stdout
    assert not [s for s in step_dirs(tmp_path) if not s.isdigit()]  # stale tmp dirs gone
    want, got = losses_by_step(reference), losses_by_step(tmp_path)
    assert sorted(got) == sorted(want) == list(range(1, LAST + 1))
    assert got == want  # bit for bit: RNG, data order, optimizer and guard state resumed
    final = checksums(tmp_path, LAST)
    assert "guard/mean" in final and final == checksums(reference, LAST)


@pytest.mark.slow
def test_another_seed_gives_other_params(reference, tmp_path, data_dir):
    """Same seed in fresh processes = identical bits (the kill tests above: every rerun
    is a fresh process, the reference compiled without the cache); another seed differs."""
    proc = train(tmp_path, data_dir, *RESUME, "--config.seed=1", faults="kill_after_save@6")
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert checksums(tmp_path, 6)["params/token_embed"] != \
        checksums(reference, 6)["params/token_embed"]


def test_deterministic_switch_sets_the_xla_flag_and_run_meta_records_it(tmp_path, monkeypatch):
    from genjax import runtime, sharding
    from genjax.workdir import write_run_meta
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    runtime.request_deterministic_ops()
    runtime.request_deterministic_ops()  # idempotent
    assert os.environ["XLA_FLAGS"].split().count("--xla_gpu_deterministic_ops=true") == 1
    config = config_lib.base_config()
    config.deterministic, config.seed = True, 1
    write_run_meta(str(tmp_path), config_lib.to_dict(config), sharding.make_mesh(config.mesh))
    meta = json.loads((tmp_path / "run_meta.json").read_text())
    assert meta["config"]["deterministic"] is True and meta["seed"] == 1
    assert "--xla_gpu_deterministic_ops=true" in meta["xla_flags"]


@pytest.mark.slow
def test_a_sigterm_at_an_eval_step_saves_without_evaluating(tmp_path, data_dir):
    """The grace period after SIGTERM is for the checkpoint: a stop that falls on an eval
    step saves and exits, and the eval (samples, evaluators: minutes) is not run first."""
    proc = train(tmp_path, data_dir, *RESUME, "--config.eval_every_steps=2", faults="term@4")
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert "preempted: saved step 4" in proc.stdout
    records = [json.loads(line) for line in
               (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r["step"] for r in records if any(k.startswith("eval/") for k in r)]
    assert evals == [2]
    assert step_dirs(tmp_path) == ["3", "4"]


# --------------------------------------------------------------------------- NaN batches
ROLLBACK = [*TINY, "--config.ckpt_every_steps=2", "--config.max_consecutive_skips=2"]
NAN_BATCHES = "nan@4,nan@5"  # the batches of steps 5 and 6: two skipped updates in a row


@pytest.mark.slow
def test_on_nan_halt_stops_non_zero_naming_the_step(tmp_path, data_dir):
    proc = train(tmp_path, data_dir, *ROLLBACK, "--config.on_nan=halt", faults=NAN_BATCHES)
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "step 6: 2 consecutive skipped updates" in errors[0]
    assert step_dirs(tmp_path) == ["2", "4"]  # no checkpoint of the bad stretch


@pytest.mark.slow
def test_on_nan_rollback_equals_a_run_that_never_saw_the_bad_batches(tmp_path, data_dir):
    clean = train(tmp_path / "clean", data_dir, *ROLLBACK, faults="drop@4,drop@5")
    assert clean.returncode == 0, clean.stderr[-3000:]
    # Rollback, then a kill after the step-8 save; the rerun must discard the same batches.
    rolled = train(tmp_path / "run", data_dir, *ROLLBACK, "--config.on_nan=rollback",
                   faults=NAN_BATCHES + ",kill_after_save@8")
    assert rolled.returncode == -9, rolled.stderr[-3000:]
    assert "rolled back to step 4, skipping batches [4, 5] (rollback 1/3)" in rolled.stdout
    rerun = train(tmp_path / "run", data_dir, *ROLLBACK, "--config.on_nan=rollback",
                  faults=NAN_BATCHES)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed from step 8\n" in rerun.stdout
    assert losses_by_step(tmp_path / "run") == losses_by_step(tmp_path / "clean")
    assert checksums(tmp_path / "run", 10) == checksums(tmp_path / "clean", 10)
    meta_batches = _meta(tmp_path / "run", 10)["batches"]
    assert {k: meta_batches[k] for k in ("drawn", "bad", "rollbacks")} == {
        "drawn": 12, "bad": [4, 5], "rollbacks": 1}


@pytest.mark.slow
def test_a_skip_streak_that_spans_a_save_rolls_back_the_same_after_a_kill(tmp_path, data_dir):
    """Steps 4 and 5 skip (batches 3, 4); step 4 is saved between them and the run killed
    there: the rerun still knows step 4's batch, so it drops both, as the clean run does."""
    clean = train(tmp_path / "clean", data_dir, *ROLLBACK, faults="drop@3,drop@4")
    assert clean.returncode == 0, clean.stderr[-3000:]
    killed = train(tmp_path / "run", data_dir, *ROLLBACK, "--config.on_nan=rollback",
                   faults="nan@3,nan@4,kill_after_save@4")
    assert killed.returncode == -9, killed.stderr[-3000:]
    rerun = train(tmp_path / "run", data_dir, *ROLLBACK, "--config.on_nan=rollback",
                  faults="nan@3,nan@4")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed from step 4\n" in rerun.stdout
    assert "rolled back to step 2, skipping batches [3, 4]" in rerun.stdout
    assert losses_by_step(tmp_path / "run") == losses_by_step(tmp_path / "clean")
    assert checksums(tmp_path / "run", 10) == checksums(tmp_path / "clean", 10)


@pytest.mark.slow
def test_rollbacks_are_bounded(tmp_path, data_dir):
    proc = train(tmp_path, data_dir, *ROLLBACK, "--config.on_nan=rollback",
                 "--config.max_rollbacks=1", faults="nan@4,nan@5,nan@6,nan@7")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "rolled back to step 4, skipping batches [4, 5]" in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "after 1 rollbacks (config.max_rollbacks)" in errors[0]


def _meta(workdir, step):
    from genjax.checkpoint import Checkpointer
    return Checkpointer(str(workdir), read_only=True).read_meta(step)


# --------------------------------------------------------------------------- loss spikes
def _quadratic(params, model_state, batch, rng):
    return jnp.mean((params["w"] * batch["x"] - batch["y"]) ** 2), ({}, model_state)


def test_a_loss_spike_is_skipped_and_counted_after_the_warmup():
    c = config_lib.base_config()
    c.optim.update(dict(name="sgd", lr=0.01, momentum=0.0, warmup_steps=0,
                        schedule="constant", weight_decay=0.0, clip_norm=0.0))
    tx = optim.make_optimizer(c)
    guard = SpikeGuard(k=3.0, warmup=3, decay=0.9)
    step = jax.jit(lambda s, b: train_step(s, b, loss_fn=_quadratic, tx=tx, spike=guard))
    state = init_state({"w": jnp.zeros(())}, {}, tx, jax.random.key_data(jax.random.key(0)),
                       ema=False)
    x = jnp.arange(1.0, 5.0)
    normal = {"x": x, "y": x}
    for _ in range(4):
        state, m = step(state, normal)
        assert int(m["spike"]) == 0
    before = state
    state, m = step(state, {"x": x, "y": 100 * x})  # loss ~ 10^4 times the usual
    assert int(m["spike"]) == 1 and int(m["total_spikes"]) == 1
    assert int(state.skips) == 1 and int(state.total_skips) == 0  # a spike is not a NaN
    np.testing.assert_array_equal(state.params["w"], before.params["w"])  # update skipped
    np.testing.assert_array_equal(state.guard.mean, before.guard.mean)  # not learned from
    state, m = step(state, normal)
    assert int(m["spike"]) == 0 and int(state.skips) == 0
    assert float(state.params["w"]) != float(before.params["w"])
    # Off (k = 0): the same batch is an ordinary update.
    off = jax.jit(lambda s, b: train_step(s, b, loss_fn=_quadratic, tx=tx))
    new, m = off(before, {"x": x, "y": 100 * x})
    assert int(m["spike"]) == 0 and float(new.params["w"]) != float(before.params["w"])


# --------------------------------------------------------------------------- key reuse
def test_the_key_reuse_checker_sees_the_loss_functions_key():
    """tests/conftest.py turns jax_debug_key_reuse on; the step gives the loss a typed key,
    so a loss that draws twice from the same key fails instead of silently correlating."""
    assert jax.config.jax_debug_key_reuse

    def reuses(params, model_state, batch, rng):
        a, b = jax.random.normal(rng, ()), jax.random.normal(rng, ())
        return params["w"] * (a + b), ({}, model_state)

    tx = optax.sgd(0.1)
    state = init_state({"w": jnp.ones(())}, {}, tx, jax.random.PRNGKey(0), ema=False)
    with pytest.raises(jax.errors.KeyReuseError):
        jax.jit(lambda s: train_step(s, {}, loss_fn=reuses, tx=tx))(state)


# --------------------------------------------------------------------------- bad records
def _corrupt_middle(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        chunk = f.read(64)
        f.seek(-len(chunk), 1)
        f.write(bytes(b ^ 0xFF for b in chunk))


@pytest.fixture(scope="module")
def corrupt_shakespeare(tmp_path_factory, data_dir):
    """A copy of the prepared Shakespeare dataset whose train file has a damaged block."""
    import shutil
    from genjax.data.lm_loader import LMData
    from ml_collections import ConfigDict
    cfg = ConfigDict(dict(name="shakespeare", text_file="", data_dir=data_dir, tokenizer="char"))
    clean = LMData(cfg, seq_len=16, global_batch_size=8, seed=0)
    root = tmp_path_factory.mktemp("corrupt")
    shutil.copytree(clean.builder.data_dir, root / os.path.relpath(clean.builder.data_dir,
                                                                   data_dir))
    [train_file] = [str(p) for p in root.rglob("*-train.array_record-*")]
    _corrupt_middle(train_file)
    return root, train_file, clean.tokens("train")


def _lm(data_dir, max_bad):
    from genjax.data.lm_loader import LMData
    from ml_collections import ConfigDict
    cfg = ConfigDict(dict(name="shakespeare", text_file="", data_dir=str(data_dir),
                          tokenizer="char", max_bad_records=max_bad))
    return LMData(cfg, seq_len=16, global_batch_size=8, seed=0)


def test_a_corrupt_record_is_named_and_fails_without_a_budget(corrupt_shakespeare):
    from genjax.data.records import BadRecordError
    root, train_file, _ = corrupt_shakespeare
    with pytest.raises(BadRecordError, match=r"train record \d+ in .*-train\.array_record-"
                                             r".*max_bad_records=0"):
        _lm(root, 0).tokens("train")


def test_bad_records_within_the_budget_are_skipped_the_same_way_every_time(
        corrupt_shakespeare, capsys):
    root, train_file, clean_tokens = corrupt_shakespeare
    a, b = _lm(root, 1), _lm(root, 1)
    np.testing.assert_array_equal(a.tokens("train"), b.tokens("train"))  # resume-safe
    assert "warning: skipping unreadable train record" in capsys.readouterr().out
    assert 0 < len(a.tokens("train")) < len(clean_tokens)  # one play fewer, nothing else
    assert len(a.bad_records.bad) == 1
    ia, ib = a.train_iterator(), b.train_iterator()
    np.testing.assert_array_equal(next(ia)["tokens"], next(ib)["tokens"])


def test_image_loader_replaces_a_real_bad_record_deterministically(tmp_path):
    """16 bytes flipped inside one record's chunk of the prepared train file: the batched
    read fails, the loader reads one by one, names the record and counts it against
    config.data.max_bad_records; within the budget the next row takes its place."""
    import glob
    from ml_collections import ConfigDict
    from genjax.data.idx import write_idx
    from genjax.data.image_loader import ImageData
    from genjax.data.records import BadRecordError
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir()
    for stem, arr in [("train-images-idx3-ubyte", rng.integers(0, 256, (16, 28, 28), np.uint8)),
                      ("train-labels-idx1-ubyte", np.arange(16, dtype=np.uint8) % 10),
                      ("t10k-images-idx3-ubyte", rng.integers(0, 256, (8, 28, 28), np.uint8)),
                      ("t10k-labels-idx1-ubyte", np.arange(8, dtype=np.uint8) % 10)]:
        write_idx(str(src / (stem + ".gz")), arr)

    def data(max_bad):
        cfg = ConfigDict(dict(name="fashion_mnist", source_dir=str(src), image_folder="",
                              image_size=0, channels=0, data_dir=str(tmp_path / "tfds"),
                              max_bad_records=max_bad))
        return ImageData(cfg, global_batch_size=16, seed=0, include_index=True)

    clean = next(data(0).train_iterator())
    [train_file] = glob.glob(str(tmp_path / "tfds" / "**" / "*-train.array_record-*"),
                             recursive=True)
    with open(train_file, "r+b") as f:  # ~1.1 kB per record chunk: byte 6000 is in record 5
        f.seek(6000)
        chunk = f.read(16)
        f.seek(6000)
        f.write(bytes(b ^ 0xFF for b in chunk))
    with pytest.raises(BadRecordError, match=r"train record 5 in .*-train\.array_record-.*"
                                             r"Corrupted.*max_bad_records=0"):
        next(data(0).train_iterator())
    skipping = data(1)
    first, again = next(skipping.train_iterator()), next(data(1).train_iterator())
    assert list(skipping._bad_records.bad) == [("train", 5)]
    assert len(first["index"]) == 16 and len(set(first["index"])) == 15  # 5 -> record 6
    np.testing.assert_array_equal(first["image"], again["image"])  # resume-safe
    lost = set(clean["index"]) - set(first["index"])
    assert len(lost) == 1  # only the damaged example is missing; the others are intact
    for i, row in enumerate(clean["index"]):
        if row not in lost:
            j = list(first["index"]).index(row)
            np.testing.assert_array_equal(first["image"][j], clean["image"][i])
