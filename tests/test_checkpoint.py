"""Specification of the checkpoint layer: corruption, retention, diagnostics, meshes."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from genjax.checkpoint import Checkpointer, CheckpointError
from genjax.checkpoint_checksums import fingerprint, host_fingerprint
from genjax.errors import CorruptCheckpoint, UserError, short_reason
from genjax.step import init_state
from genjax.workdir import WorkdirLock
from tests.families import one_error_line

TX = optax.adam(1e-3)


def make_state(value=1.0, n=16):
    params = {"w": jnp.full((n, 4), value, jnp.float32), "b": jnp.arange(4, dtype=jnp.float32)}
    return init_state(params, {}, TX, jax.random.PRNGKey(0), ema=False)


def abstract(state, sharding=None):
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding or x.sharding), state)


def save_steps(workdir, steps, **kw):
    ck = Checkpointer(workdir, **kw)
    for s in steps:
        ck.save(s, make_state(float(s)), {"pos": s}, {"config": {}},
                metrics=kw.pop("metrics_of", {}).get(s) if "metrics_of" in kw else None)
    ck.close()


def largest_file(root):
    files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
    return max(files, key=os.path.getsize)


def flip_bit(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x10]))


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def delete_metadata(step_dir):
    os.remove(os.path.join(step_dir, "state", "_METADATA"))


def delete_state_item(step_dir):
    """The whole state/ folder gone (meta and data kept): was a KeyError traceback."""
    import shutil
    shutil.rmtree(os.path.join(step_dir, "state"))


@pytest.mark.parametrize("damage", [flip_bit, truncate, delete_metadata, delete_state_item])
def test_corrupt_latest_falls_back_to_previous_step_with_a_warning(tmp_path, damage, capsys):
    save_steps(tmp_path, [1, 2])
    step_dir = tmp_path / "checkpoints" / "2"
    whole_step = damage in (delete_metadata, delete_state_item)
    damage(step_dir if whole_step else largest_file(step_dir / "state"))
    ck = Checkpointer(tmp_path)
    state, data, meta, step = ck.restore_latest(abstract(make_state()))
    assert step == 1 and data == {"pos": 1}
    np.testing.assert_array_equal(state.params["w"], make_state(1.0).params["w"])
    out = capsys.readouterr().out
    assert "warning" in out and "step 2" in out
    assert (tmp_path / "checkpoints" / "corrupt-2").exists()   # kept for a post-mortem
    assert ck.latest_step() == 1


def test_a_step_moved_aside_twice_keeps_both_copies(tmp_path):
    """A rerun that writes step 2 again and finds it corrupt again keeps the first
    post-mortem copy too (it used to be deleted to make room)."""
    for round_ in range(2):
        save_steps(tmp_path, [1, 2] if round_ == 0 else [2])
        flip_bit(largest_file(tmp_path / "checkpoints" / "2" / "state"))
        assert Checkpointer(tmp_path).restore_latest(abstract(make_state()))[3] == 1
    assert Checkpointer(tmp_path).quarantined() == ["corrupt-2", "corrupt-2.2"]


def test_strict_restore_fails_instead_of_falling_back(tmp_path):
    save_steps(tmp_path, [1, 2])
    flip_bit(largest_file(tmp_path / "checkpoints" / "2" / "state"))
    with pytest.raises(CheckpointError, match="step 2"):
        Checkpointer(tmp_path).restore_latest(abstract(make_state()), strict=True)


def test_a_damaged_array_stores_error_keeps_its_reason_in_a_short_line():
    """TensorStore's error (as a truncated array file gives it) carries its whole spec as
    JSON, and at times a bound-method repr: the checkpoint's error line keeps the reason
    and the file, not those (errors.short_reason)."""
    spec = "{" + ", ".join(f'\\"k{i}\\":{{\\"limit\\":{i}}}' for i in range(80)) + "}"
    e = ValueError(
        'OUT_OF_RANGE: Error reading Byte range [0, 482) of local file "/w/checkpoints/1/'
        'state/d/51ca": Requested byte range [0, 482) is not valid for value of size 241 '
        "<bound method PyCapsule.spec of TensorStore({...})> "
        f"[tensorstore_spec='{spec}'] [source locations='tensorstore/kvstore/x.cc:12']\nmore")
    line = short_reason(e)
    assert line.startswith("ValueError: OUT_OF_RANGE: Error reading Byte range"), line
    assert line.endswith("is not valid for value of size 241"), line
    assert "tensorstore_spec" not in line and "bound method" not in line and len(line) < 400


def test_all_steps_corrupt_is_an_error_never_a_silent_restart(tmp_path):
    save_steps(tmp_path, [1])
    flip_bit(largest_file(tmp_path / "checkpoints" / "1" / "state"))
    with pytest.raises(CheckpointError, match="refusing to restart"):
        Checkpointer(tmp_path).restore_latest(abstract(make_state()))
    # the failed restore moved step 1 aside: the same command again must not start afresh
    assert (tmp_path / "checkpoints" / "corrupt-1").exists()
    with pytest.raises(CheckpointError, match=r"moved aside as corrupt \(corrupt-1\)"):
        Checkpointer(tmp_path).restore_latest(abstract(make_state()))
    from types import SimpleNamespace

    from genjax import resume
    ck = Checkpointer(tmp_path)
    with pytest.raises(CheckpointError, match="refusing to restart"):  # as genjax.train does
        resume.start(ck, SimpleNamespace(abstract_state=abstract(make_state())),
                     SimpleNamespace(strict_restore=False), None)


def test_checksum_detects_a_single_flipped_bit():
    state = make_state()
    a, _ = fingerprint(state.params)
    w = np.asarray(state.params["w"]).copy()
    w.view(np.uint32)[3, 1] ^= 1 << 7
    b, _ = fingerprint({"b": state.params["b"], "w": jnp.asarray(w)})
    assert not np.array_equal(a["w"], b["w"]) and np.array_equal(a["b"], b["b"])


def test_the_host_checksums_equal_the_jitted_ones_bit_for_bit():
    rng = np.random.default_rng(0)
    tree = {"f32": jnp.asarray(rng.standard_normal((37, 5)), jnp.float32),
            "bf16": jnp.asarray(rng.standard_normal(300), jnp.bfloat16),
            "f16": jnp.asarray(rng.standard_normal(9), jnp.float16),
            "i8": jnp.asarray(rng.integers(-128, 128, 11), jnp.int8),
            "u32": jnp.asarray(rng.integers(0, 2**32, 70_000, dtype=np.uint64), jnp.uint32),
            "i32": jnp.int32(-7), "mask": jnp.asarray([True, False, True]),
            "key": jax.random.key(3), "raw_key": jax.random.PRNGKey(4),
            "np64": np.linspace(0.0, 1.0, 6), "empty": jnp.zeros((0, 3))}
    jitted, jitted_finite = jax.device_get(fingerprint(tree))
    host, host_finite = host_fingerprint(tree)
    assert sorted(host) == sorted(jitted) and bool(host_finite) and bool(jitted_finite)
    for k in jitted:
        np.testing.assert_array_equal(host[k], jitted[k], err_msg=k)
    # The first sum, in Python integers: sum_i fmix32(word_i + fmix32(i * 0x9E3779B9 +
    # 0x27D4EB2F)) mod 2^32, fmix32 being MurmurHash3's 32-bit finalizer.
    def fmix32(h):
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & 0xFFFFFFFF
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & 0xFFFFFFFF
        return h ^ (h >> 16)
    words = np.asarray(tree["u32"]).tolist()
    expected = sum(fmix32((w + fmix32((i * 0x9E3779B9 + 0x27D4EB2F) & 0xFFFFFFFF)) & 0xFFFFFFFF)
                   for i, w in enumerate(words)) % 2**32
    assert int(host["u32"][0]) == expected
    tree["bf16"] = tree["bf16"].at[17].set(jnp.inf)
    assert not bool(host_fingerprint(tree)[1]) and not bool(fingerprint(tree)[1])


def test_nonfinite_state_is_never_checkpointed(tmp_path):
    ck = Checkpointer(tmp_path)
    with pytest.raises(CheckpointError, match="NaN"):
        ck.save(1, make_state(float("nan")), {}, {})
    ck.close()
    assert ck.all_steps() == []


def test_retention_keeps_latest_and_true_best_in_the_right_direction(tmp_path):
    ck = Checkpointer(tmp_path, keep=2, keep_best=1, best_metric="eval/loss", best_mode="min")
    losses = {1: 3.0, 2: 1.0, 3: 2.0, 4: 2.5, 5: 2.7}
    for s, loss in losses.items():
        ck.save(s, make_state(float(s)), {}, {}, metrics={"eval/loss": loss})
    ck.close()
    assert ck.all_steps() == [2, 4, 5]
    assert ck.best_step() == 2
    ck = Checkpointer(tmp_path, keep=1, keep_best=1, best_metric="eval/acc", best_mode="max")
    assert ck.best_step() is None  # no step recorded that metric


def test_retention_never_deletes_the_step_it_resumed_from(tmp_path):
    save_steps(tmp_path, [1, 2])
    flip_bit(largest_file(tmp_path / "checkpoints" / "2" / "state"))
    ck = Checkpointer(tmp_path, keep=1)
    *_, resumed = ck.restore_latest(abstract(make_state()))
    for s in (3, 4, 5):
        ck.save(s, make_state(float(s)), {}, {})
    ck.close()
    assert resumed == 1 and 1 in ck.all_steps() and 5 in ck.all_steps()


def test_failed_save_is_loud_and_names_the_step(tmp_path, monkeypatch):
    ck = Checkpointer(tmp_path)

    def read_only(*a, **k):  # root ignores chmod, so the failure is simulated
        raise OSError("Read-only file system")
    monkeypatch.setattr(ck.manager, "save", read_only)
    with pytest.raises(CheckpointError, match="step 1.*Read-only"):
        ck.save(1, make_state(), {}, {})


def test_failed_async_save_surfaces_at_wait(tmp_path, monkeypatch):
    ck = Checkpointer(tmp_path)
    ck.save(1, make_state(), {}, {})

    def full_disk(*a, **k):
        raise OSError("No space left on device")
    monkeypatch.setattr(ck.manager, "wait_until_finished", full_disk)
    with pytest.raises(CheckpointError, match="step 1.*No space"):
        ck.wait()


def test_shape_and_dtype_mismatch_name_the_leaf_and_never_cast(tmp_path):
    save_steps(tmp_path, [1])
    ck = Checkpointer(tmp_path)
    with pytest.raises(UserError, match=r"params/w: checkpoint float32\[16, 4\] vs model float32\[8, 4\]"):
        ck.restore(1, abstract(make_state(n=8)))
    bf16 = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16)
                                  if x.dtype == jnp.float32 else x, make_state())
    with pytest.raises(UserError, match="bfloat16"):
        ck.restore(1, abstract(bf16))


def test_restore_onto_another_mesh_gives_identical_values(tmp_path):
    devices = np.array(jax.devices())
    mesh8 = Mesh(devices.reshape(8), ("x",))
    state = make_state()
    state = state.replace(params={"w": jax.device_put(state.params["w"],
                                                      NamedSharding(mesh8, P("x"))),
                                  "b": state.params["b"]})
    ck = Checkpointer(tmp_path)
    ck.save(1, state, {}, {})
    ck.close()
    mesh2 = Mesh(devices[:2].reshape(2), ("y",))
    target = abstract(make_state(), NamedSharding(mesh2, P()))
    target = target.replace(params={
        "w": jax.ShapeDtypeStruct((16, 4), jnp.float32, sharding=NamedSharding(mesh2, P("y"))),
        "b": target.params["b"]})
    restored, _, _ = Checkpointer(tmp_path).restore(1, target)
    assert restored.params["w"].sharding.mesh.shape == {"y": 2}
    for got, want in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(target)):
        assert got.sharding.is_equivalent_to(want.sharding, got.ndim)  # split, not replicated
    assert restored.params["w"].addressable_shards[0].data.shape == (8, 4)
    np.testing.assert_array_equal(restored.params["w"], state.params["w"])


def test_a_second_live_run_is_refused_and_a_stale_lock_taken_over(tmp_path):
    first = WorkdirLock(str(tmp_path)).acquire()
    with pytest.raises(UserError, match="another run"):
        WorkdirLock(str(tmp_path)).acquire()
    first.release()
    with open(tmp_path / ".lock", "w") as f:  # a lock left by a dead process
        import json
        import socket
        json.dump({"host": socket.gethostname(), "pid": 2**22 + 12345}, f)
    taken = WorkdirLock(str(tmp_path)).acquire()
    assert taken.held
    taken.release()
    assert not (tmp_path / ".lock").exists()


def test_a_read_only_restore_logs_nothing(tmp_path, caplog):
    """Sampling and evaluation open the workdir read-only: no orbax notice each time."""
    import logging
    save_steps(str(tmp_path), [1])
    with caplog.at_level(logging.INFO):
        ck = Checkpointer(str(tmp_path), read_only=True)
        state, data, _ = ck.restore(1, abstract(make_state()))
        ck.close()
    assert data == {"pos": 1}
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_the_first_checkpointer_of_a_process_logs_no_warning(tmp_path, monkeypatch, caplog):
    """Each run's first Checkpointer picks orbax's array writer (REPLICA_PARALLEL), which
    replaces orbax's registered one: a choice, not a problem, so no WARNING line on the
    console of every run, sample and evaluation."""
    import logging
    from genjax import checkpoint_handlers
    monkeypatch.setattr(checkpoint_handlers, "_registered", None)  # as in a fresh process
    monkeypatch.setattr(logging.getLogger("absl"), "filters", [])
    with caplog.at_level(logging.INFO):
        Checkpointer(str(tmp_path)).close()
    assert checkpoint_handlers._registered is False  # one process: one writer per array
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("saved_replica_parallel", [True, False])
def test_replica_parallel_and_single_writer_saves_restore_the_same_values(
        tmp_path, monkeypatch, saved_replica_parallel):
    """A multi-host run's checkpoint (orbax writes each replicated array in slices, one per
    replica) and a one-process run's (one writer per array) restore to the same values,
    either way round (genjax/checkpoint_handlers.py: REPLICA_PARALLEL)."""
    from genjax import checkpoint_handlers
    mesh8 = Mesh(np.array(jax.devices()).reshape(8), ("x",))
    rep = NamedSharding(mesh8, P())
    state = make_state(n=64)
    state = state.replace(params={"w": jax.device_put(
        jnp.arange(64 * 4, dtype=jnp.float32).reshape(64, 4), rep),
        "b": jax.device_put(state.params["b"], rep)})
    monkeypatch.setattr(checkpoint_handlers, "REPLICA_PARALLEL", saved_replica_parallel)
    ck = Checkpointer(tmp_path)
    ck.save(1, state, {}, {})
    ck.close()
    monkeypatch.setattr(checkpoint_handlers, "REPLICA_PARALLEL", not saved_replica_parallel)
    restored, _, _ = Checkpointer(tmp_path, read_only=True).restore(1, abstract(state))
    for got, want in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(state)):
        np.testing.assert_array_equal(got, want)


def test_the_checkpoint_save_bench_times_both_ways_of_writing(tmp_path, capsys):
    import json
    from experiments.bench import checkpoint_save
    out = tmp_path / "bench.json"
    checkpoint_save.main(["--config=configs/lm_shakespeare.py:tiny", "--saves=1",
                          f"--out={out}"])
    r = json.loads(out.read_text())
    assert [m["replica_parallel"] for m in r["modes"]] == [True, False]
    assert all(0 < m["save_blocking_s"] <= m["save_finished_s"] for m in r["modes"])
    assert r["devices"] == 8 and r["host_isa"] in ("avx2", "avx512", None)
    assert "one writer per array" in capsys.readouterr().out


def test_a_step_that_is_not_there_is_one_line_naming_the_steps(tmp_path):
    save_steps(tmp_path, [5])
    ck = Checkpointer(tmp_path, read_only=True)
    with pytest.raises(UserError, match=r"no step 999 in .* \(\[5\]\)"):
        ck.read_meta(999)
    with pytest.raises(UserError, match=r"init_from: no step 999 in .* \(\[5\]\)"):
        ck.restore_params(999, abstract(make_state()).params)
    assert ck.read_meta(5)["config"] == {}


def test_init_from_takes_a_workdir_named_by_digits_as_a_workdir(tmp_path):
    from genjax.checkpoint import parse_init_from
    save_steps(tmp_path / "123", [4])  # e.g. a Slurm job id
    assert parse_init_from(str(tmp_path / "123")) == (str(tmp_path / "123"), None)
    assert parse_init_from(str(tmp_path / "123" / "checkpoints" / "4")) == (
        str(tmp_path / "123"), 4)


def meta_file(workdir, step):
    return os.path.join(workdir, "checkpoints", str(step), "meta", "metadata")


def test_checksums_see_a_zeroed_block_and_moved_words_that_plain_sums_miss():
    # A 4 KiB block of 1.0s zeroed (what a lost disk block looks like): the plain and
    # position-weighted word sums mod 2^32 written before 2026-12-04 both stay the same.
    ones = np.ones(4096, np.float32)
    zeroed = ones.copy()
    zeroed[1024:2048] = 0.0
    legacy = [host_fingerprint({"x": x}, "legacy")[0]["x"] for x in (ones, zeroed)]
    np.testing.assert_array_equal(*legacy)
    assert not np.array_equal(host_fingerprint({"x": ones})[0]["x"],
                              host_fingerprint({"x": zeroed})[0]["x"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1000).astype(np.float32)
    moved = x.copy()
    moved[[10, 500]] = x[[500, 10]]
    changed = [moved] + [ones.copy() for _ in range(32)]
    for bit, y in enumerate(changed[1:]):  # every bit of one word, one at a time
        y.view(np.uint32)[bit * 97] ^= np.uint32(1 << bit)
    for y, base in zip(changed, [x] + [ones] * 32):
        a, b = host_fingerprint({"x": base})[0]["x"], host_fingerprint({"x": y})[0]["x"]
        assert (a != b).all()  # both sums: a changed word always changes each of them


def test_a_checkpoint_written_before_the_checksum_scheme_still_verifies(tmp_path, monkeypatch):
    import json

    from genjax import checkpoint_checksums
    monkeypatch.setattr(checkpoint_checksums, "SCHEME", "legacy")
    save_steps(tmp_path, [1, 2])
    monkeypatch.undo()
    for step in (1, 2):  # as such a checkpoint is on disk: no checksum_scheme key
        with open(meta_file(tmp_path, step)) as f:
            meta = json.load(f)
        assert meta.pop("checksum_scheme") == "legacy"
        with open(meta_file(tmp_path, step), "w") as f:
            json.dump(meta, f)
    state, _, _ = Checkpointer(tmp_path).restore(2, abstract(make_state()))
    np.testing.assert_array_equal(state.params["w"], make_state(2.0).params["w"])
    meta["checksums"]["params/w"][0] ^= 1  # and a mismatch under the old sums is caught
    with open(meta_file(tmp_path, 2), "w") as f:
        json.dump(meta, f)
    state, _, _, step = Checkpointer(tmp_path).restore_latest(abstract(make_state()))
    assert step == 1 and (tmp_path / "checkpoints" / "corrupt-2").exists()


def test_init_from_params_are_verified_against_their_checksums(tmp_path):
    import json
    save_steps(tmp_path, [1])
    params = abstract(make_state()).params
    ck = Checkpointer(tmp_path, read_only=True)
    np.testing.assert_array_equal(ck.restore_params(1, params)["w"], make_state(1.0).params["w"])
    with open(meta_file(tmp_path, 1)) as f:
        meta = json.load(f)
    meta["checksums"]["params/w"][1] ^= 1 << 31  # what the bytes of params/w no longer give
    with open(meta_file(tmp_path, 1), "w") as f:
        json.dump(meta, f)
    with pytest.raises(CheckpointError, match=r"init_from: step 1 .*checksums in \['params/w'\]"):
        Checkpointer(tmp_path, read_only=True).restore_params(1, params)


def garble_metadata(step_dir):
    with open(os.path.join(step_dir, "state", "_METADATA"), "w") as f:
        f.write("garbage")


@pytest.mark.parametrize("damage", [truncate, delete_metadata, garble_metadata])
def test_init_from_a_damaged_step_is_a_corrupt_checkpoint_error(tmp_path, damage):
    """init_from/frozen_from read params alone: a damaged step is the same one-line
    CorruptCheckpoint as a resume's (it was a JSONDecodeError or ValueError traceback)."""
    save_steps(tmp_path, [1])
    step_dir = tmp_path / "checkpoints" / "1"
    damage(largest_file(step_dir / "state") if damage is truncate else step_dir)
    with pytest.raises(CorruptCheckpoint, match=f"init_from: step 1 of {tmp_path}"):
        Checkpointer(tmp_path, read_only=True).restore_params(1, abstract(make_state()).params)


@pytest.mark.parametrize("error", [
    MemoryError(), PermissionError(13, "Permission denied"), OSError(28, "No space left"),
    RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8.00GiB")])
def test_a_read_that_fails_on_this_machine_moves_nothing_aside(tmp_path, error):
    # Out of memory or a permission says nothing about the files: quarantining the step
    # and resuming from an older one would throw work away.
    save_steps(tmp_path, [1, 2])
    ck = Checkpointer(tmp_path)

    def fail(*args, **kwargs):
        try:
            raise error
        except Exception as e:  # as orbax wraps what it meets
            raise ValueError("restore failed") from e
    ck.manager.restore = fail
    with pytest.raises(CheckpointError, match="step 2: reading it failed on this machine"):
        ck.restore_latest(abstract(make_state()))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]


def test_a_nan_or_inf_score_never_displaces_the_best_step(tmp_path):
    # sorted() puts a NaN anywhere: ranked as a score, it kept step 1 as "best" and
    # deleted step 3, the true best.
    ck = Checkpointer(tmp_path, keep=1, keep_best=1, best_metric="eval/loss", best_mode="min")
    for s, loss in {1: float("nan"), 2: 0.5, 3: 0.1, 4: float("-inf"), 5: 0.7, 6: 0.9}.items():
        ck.save(s, make_state(float(s)), {}, {}, metrics={"eval/loss": loss})
    ck.close()
    assert ck.all_steps() == [3, 6] and ck.best_step() == 3
    assert Checkpointer(tmp_path, keep=1, keep_best=1, best_metric="eval/loss").best_step() == 3


def test_an_unreadable_meta_is_one_line_naming_the_step(tmp_path):
    save_steps(tmp_path, [1])
    with open(meta_file(tmp_path, 1), "w") as f:
        f.write("garbage")  # genjax.sample showed a JSONDecodeError traceback
    with one_error_line(CheckpointError, match=r"step 1 of .*: its meta cannot be read"):
        Checkpointer(tmp_path, read_only=True).read_meta(1)


@pytest.mark.parametrize("end", ["abandon", "close"])
def test_a_checkpointer_ended_before_any_save_has_swept_the_stale_temporary_folders(
        tmp_path, end):
    """orbax sweeps unfinished saves' temporary folders on a thread from the moment the
    manager is made; a process that ends before its first save (a config error, a resume
    of a finished run) must not exit while that thread runs: it printed a traceback."""
    stale = tmp_path / "checkpoints" / "9.orbax-checkpoint-tmp-1"
    stale.mkdir(parents=True)
    for i in range(2000):  # enough files that the sweep outlasts a bare close()
        (stale / f"part_{i}").write_bytes(b"x")
    ckpt = Checkpointer(str(tmp_path))
    getattr(ckpt, end)()
    assert not stale.exists()
