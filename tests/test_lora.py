"""LoRA in parameter space (genjax/families/lora.py), freezing (optim.freeze) and
init_from, against answers computed independently of the code under test.

Known answers: with B = 0 the LoRA model is the base model bit for bit; at step 0 the
gradient of A is exactly 0 and the gradient of B is (alpha / r) A^T G, G the full
fine-tune gradient of the kernel on the same batch and key; merging equals the LoRA
forward pass; training moves only the adapters (base checksum unchanged) and the optimizer
holds 2x the adapter bytes; frozen leaves are bit-identical and have no optimizer state.
The gradient and merge answers hold per layer under scan_layers too.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from genjax import assemble, families, sharding, train
from genjax.checkpoint import Checkpointer
from genjax.errors import ConfigError, UserError
from genjax.families import lora
from tests.families import run_config, tiny_config
from tests.test_families import random_batch

RANK, ALPHA = 4, 8.0
LORA = {"lora.rank": RANK, "lora.alpha": ALPHA, "optim.ema_decay": 0.0}


def build(family="lm", **overrides):
    config = tiny_config(family, **overrides)
    return assemble.assemble(config, sharding.make_mesh(config.mesh))


def nbytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))


@pytest.fixture(scope="module", params=[False, True], ids=["layers", "scan_layers"])
def lm_lora(request):
    """The tiny LM with adapters; scan_layers: kernels and adapters [L, ...] (one per layer)."""
    parts = build(**LORA, **{"model.scan_layers": request.param})
    state = jax.device_get(parts.init_state())
    return parts, state, random_batch(parts)


def per_layer(x, parts):
    """An adapter or kernel as a list of its layers' arrays (one array when not scanned)."""
    x = np.asarray(x, np.float64)
    return list(x) if parts.config.model.scan_layers else [x]


def _losses_and_grads(parts, state, batch):
    """(loss, grads) of the LoRA loss w.r.t. the adapters and of the family's own loss
    w.r.t. the base params, with the same batch and key."""
    inner, key = parts.family.inner, jax.random.key(0)
    base = state.model_state[lora.BASE]
    rest = {k: v for k, v in state.model_state.items() if k != lora.BASE}
    kw = dict(model=parts.model, config=parts.config)
    lora_loss = lambda p: parts.family.loss_fn(p, state.model_state, batch, key, **kw)[0]  # noqa
    full_loss = lambda p: inner.loss_fn(p, rest, batch, key, **kw)[0]  # noqa
    return (jax.value_and_grad(lora_loss)(state.params),
            jax.value_and_grad(full_loss)(base))


def test_with_b_zero_the_lora_model_is_the_base_model_bit_for_bit(lm_lora):
    parts, state, batch = lm_lora
    base = state.model_state[lora.BASE]
    tokens = jnp.asarray(batch["tokens"][:, :-1])
    merged, _ = parts.family.merge_params(state.params, state.model_state)
    np.testing.assert_array_equal(parts.model.apply({"params": merged}, tokens),
                                  parts.model.apply({"params": base}, tokens))
    (l_lora, _), (l_full, _) = _losses_and_grads(parts, state, batch)
    assert float(l_lora) == float(l_full)


def test_first_step_gradients_are_zero_for_a_and_scaled_a_transpose_g_for_b(lm_lora):
    parts, state, batch = lm_lora
    (_, g_lora), (_, g_full) = _losses_and_grads(parts, state, batch)
    flat_g = traverse_util.flatten_dict(g_full)
    adapters = traverse_util.flatten_dict(state.params["lora"], is_leaf=lambda _, x: "a" in x)
    grads = traverse_util.flatten_dict(g_lora["lora"], is_leaf=lambda _, x: "a" in x)
    # q, k, v, out, up, down in 2 layers (scanned: one [2, ...] adapter each)
    assert len(adapters) == (6 if parts.config.model.scan_layers else 12)
    for path, ab in adapters.items():
        want_b = []
        for a, g in zip(per_layer(ab["a"], parts), per_layer(flat_g[path], parts)):
            n_in = a.ndim - 1
            want_b.append((ALPHA / RANK) * np.tensordot(a, g, axes=(list(range(n_in)),
                                                                    list(range(n_in)))))
        want_b = np.stack(want_b) if parts.config.model.scan_layers else want_b[0]
        assert np.all(np.asarray(grads[path]["a"]) == 0.0), path
        np.testing.assert_allclose(grads[path]["b"], want_b, rtol=1e-4, atol=1e-7,
                                   err_msg="/".join(path))


def test_merged_params_equal_the_lora_forward_pass_after_b_moves(lm_lora):
    parts, state, batch = lm_lora
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda x: x + 0.05 * rng.standard_normal(x.shape).astype(
        x.dtype), state.params)
    tokens = jnp.asarray(batch["tokens"][:, :-1])
    merged, _ = parts.family.merge_params(params, state.model_state)
    # the forward pass with W + s A B built here by hand, kernel by kernel
    flat = traverse_util.flatten_dict(state.model_state[lora.BASE])
    adapters = traverse_util.flatten_dict(params["lora"], is_leaf=lambda _, x: "a" in x)
    for path, ab in adapters.items():
        delta = np.stack([a.reshape(-1, RANK) @ b.reshape(RANK, -1) for a, b in
                          zip(per_layer(ab["a"], parts), per_layer(ab["b"], parts))])
        flat[path] = (np.asarray(flat[path], np.float64) + ALPHA / RANK * delta.reshape(
            flat[path].shape)).astype(np.float32)
    by_hand = traverse_util.unflatten_dict(flat)
    np.testing.assert_allclose(parts.model.apply({"params": merged}, tokens),
                               parts.model.apply({"params": by_hand}, tokens), rtol=1e-5, atol=1e-5)


def test_lora_training_moves_only_the_adapters(tmp_path, data_dir):
    config = run_config("lm")
    config.unlock()
    config.update_from_flattened_dict(dict(LORA, total_steps=4))
    config.lock()
    train.train(config, str(tmp_path))
    parts = assemble.assemble(config, sharding.make_mesh(config.mesh))
    final, _, _ = Checkpointer(str(tmp_path), read_only=True).restore(4, parts.abstract_state)
    start = parts.init_state()
    base_then, base_now = start.model_state[lora.BASE], final.model_state[lora.BASE]
    for x, y in zip(jax.tree_util.tree_leaves(base_then), jax.tree_util.tree_leaves(base_now)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    moved = [float(jnp.abs(b).max()) for b in
             jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x: x, final.params))]
    assert max(moved) > 0
    adapter_bytes = nbytes(final.params)
    assert 2 * adapter_bytes <= nbytes(final.opt_state) <= 2 * adapter_bytes + 64  # mu, nu, counts
    assert adapter_bytes < 0.2 * nbytes(base_now)


def test_frozen_leaves_do_not_move_and_have_no_optimizer_state(tmp_path, data_dir):
    config = run_config("lm")
    config.unlock()
    config.optim.freeze = ("token_embed", r"^attn_0/")
    config.total_steps = 3
    config.lock()
    train.train(config, str(tmp_path))
    parts = assemble.assemble(config, sharding.make_mesh(config.mesh))
    final, _, _ = Checkpointer(str(tmp_path), read_only=True).restore(3, parts.abstract_state)
    start = jax.device_get(parts.init_state())
    frozen = {"token_embed", "attn_0"}
    flat0 = traverse_util.flatten_dict(start.params)
    flat1 = traverse_util.flatten_dict(jax.device_get(final.params))
    for path in flat0:
        same = np.array_equal(flat0[path], flat1[path])
        assert same == (path[0] in frozen), path
    trainable = sum(x.nbytes for p, x in flat0.items() if p[0] not in frozen)
    assert 2 * trainable <= nbytes(final.opt_state) <= 2 * trainable + 64
    with pytest.raises(ConfigError, match=r"\['no_such_layer'\] match no parameter"):
        build(**{"optim.freeze": ("no_such_layer",)})


def test_gradient_accumulation_keeps_no_state_for_frozen_leaves():
    """optim.accum_steps = 4: every 4th call the trained leaves take the update of the
    mean of the 4 gradients (the optimizer without accumulation, fed that mean); the
    frozen ones hold no accumulator and never move."""
    from genjax import optim
    params = {"frozen": jnp.ones((64, 64)), "w": jnp.ones((4, 4))}
    labels = optim.with_frozen(None, params, ("frozen",))
    tx = optim.make_optimizer(tiny_config("lm", **{"optim.accum_steps": 4}), labels)
    plain = optim.make_optimizer(tiny_config("lm"), labels)
    state, plain_state = tx.init(params), plain.init(params)
    assert nbytes(state) <= 3 * params["w"].nbytes + 64  # mu, nu, accumulator; counters
    seen = []
    for i in range(12):
        grads = jax.tree_util.tree_map(
            lambda x, i=i: jax.random.normal(jax.random.key(i), x.shape), params)
        updates, state = tx.update(grads, state, params)
        assert not np.any(np.asarray(updates["frozen"]))
        seen.append(grads)
        if len(seen) < 4:
            assert not np.any(np.asarray(updates["w"]))
            continue
        mean = jax.tree_util.tree_map(lambda *g: sum(g) / 4, *seen)
        want, plain_state = plain.update(mean, plain_state, params)
        np.testing.assert_allclose(updates["w"], want["w"], rtol=1e-5, atol=1e-9)
        seen = []
    assert np.any(np.asarray(updates["w"]))  # past the warm-up's lr 0


def test_init_from_takes_the_params_and_names_each_mismatched_leaf(tiny_run, tmp_path):
    src = tiny_run("lm")
    config = run_config("lm")
    config.unlock()
    config.update_from_flattened_dict({"init_from": str(src), "total_steps": 0 + 1,
                                       "optim.lr": 0.0, "optim.warmup_steps": 0})
    config.lock()
    train.train(config, str(tmp_path / "ft"))
    parts = assemble.assemble(config, sharding.make_mesh(config.mesh))
    want, _, _ = Checkpointer(str(src), read_only=True).restore(6, parts.abstract_state)
    got, _, _ = Checkpointer(str(tmp_path / "ft"), read_only=True).restore(1, parts.abstract_state)
    for x, y in zip(jax.tree_util.tree_leaves(want.params), jax.tree_util.tree_leaves(got.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # lr 0: the source params

    wide = run_config("lm")
    wide.unlock()
    wide.update_from_flattened_dict({"init_from": str(src), "model.embed_dim": 64})
    wide.lock()
    with pytest.raises(UserError, match=r"(?s)params do not match.*token_embed: checkpoint "
                                        r"float32\[\d+, 32\] vs model float32\[\d+, 64\]"):
        train.train(wide, str(tmp_path / "wide"))


def test_lora_with_ema_or_targets_that_match_nothing_is_refused():
    with pytest.raises(ConfigError, match="ema_decay"):
        build(**{**LORA, "optim.ema_decay": 0.9})
    with pytest.raises(ConfigError, match="matches no kernel"):
        build(**{**LORA, "lora.targets": ("nothing_here",)})
    with pytest.raises(ConfigError, match=r"lora.targets=\('\(kernel',\): not a regular exp"):
        build(**{**LORA, "lora.targets": ("(kernel",)})
    with pytest.raises(ConfigError, match="parameter groups"):
        build("gan", **LORA)


@pytest.mark.parametrize("overrides", [{"model.use_bias": True},   # [heads, head_dim] biases
                                       {"model.scan_layers": True}])  # [layers, D] scales
def test_adapters_go_on_kernels_never_on_2d_biases_or_norm_scales(overrides):
    config = tiny_config("lm", **overrides, **LORA, **{"lora.targets": ("attn_", "ln", "mlp")})
    model = families.get("lm").make_model(config)
    tokens = np.zeros((2, int(config.model.max_len)), np.int32)
    base = jax.eval_shape(model.init, jax.random.key(0), tokens)["params"]
    flat = traverse_util.flatten_dict(sharding.unbox(base))
    two_d = {p[-1] for p, x in flat.items() if len(x.shape) >= 2}
    assert two_d & {"bias", "scale"}, two_d  # the case exists in this model
    names = {p[-1] for p in lora.targets(base, config)}
    assert names == {"kernel"}, names


def test_merge_writes_an_ordinary_checkpoint_equal_to_the_lora_run(tiny_run, tmp_path):
    from genjax import inference
    from genjax.lora import merge_workdir
    from tests import subproc
    src, out = tiny_run("lm+lora"), tmp_path / "merged"
    assert merge_workdir(str(src), str(out)) == 6
    lora_run, merged = inference.load(str(src)), inference.load(str(out))
    assert merged.config.lora.rank == 0 and lora_run.config.lora.rank == RANK
    assert not jax.tree_util.tree_leaves(merged.model_state)  # no frozen base left
    for x, y in zip(jax.tree_util.tree_leaves(lora_run.params),
                    jax.tree_util.tree_leaves(merged.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    proc = subproc.run_module("genjax.sample", f"--workdir={out}", "--prompt=ab",
                              "--num_samples=1", "--max_new_tokens=4")
    assert proc.returncode == 0 and "sample 1/1 (step 6)" in proc.stdout, proc.stderr[-1500:]
    with pytest.raises(UserError, match="exists and is not empty"):
        merge_workdir(str(src), str(out))
    subproc.assert_one_line_error(
        subproc.run_module("genjax.lora", "merge", f"--workdir={tiny_run('lm')}",
                           f"--out={tmp_path / 'x'}"), "not a LoRA run")
    assert not (tmp_path / "x").exists()


def test_a_merged_or_quantized_dpo_lora_run_loads_with_the_base_as_its_reference(tiny_run,
                                                                                 tmp_path):
    """With LoRA the frozen base is DPO's reference; a run without LoRA keeps the reference
    in model_state, so merging (and int8 quantizing) puts the base there."""
    from genjax import inference
    from genjax.lora import merge_workdir
    from genjax.quantize import quantize_workdir
    src = tiny_run("dpo+lora")
    merge_workdir(str(src), str(tmp_path / "merged"))
    quantize_workdir(str(src), str(tmp_path / "int8"))
    base = inference.restore(str(src))[1].model_state[lora.BASE]
    for out in ("merged", "int8"):
        run = inference.load(str(tmp_path / out))
        assert run.config.lora.rank == 0 and set(run.model_state) == {"reference"}
        for x, y in zip(jax.tree_util.tree_leaves(base),
                        jax.tree_util.tree_leaves(run.model_state["reference"])):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_fine_tuning_on_new_text_keeps_the_source_tokenizer(tiny_run, tmp_path, data_dir):
    """New text is encoded with the source run's tokenizer (not a new vocabulary built from
    it); characters the source lacks are one error naming them, or mapped by option."""
    from genjax.data.tokenizer import tokenizer_from_json
    from genjax.families import lm
    src = tiny_run("lm")
    source_vocab = tokenizer_from_json(
        Checkpointer(str(src), read_only=True).read_meta(6)["data"]["tokenizer"]).vocab
    text = tmp_path / "new.txt"
    body = "".join(c for c in "to be or not to be, that is the question\n" if c in source_vocab)
    text.write_text("naïve ☃\n" + body * 200)
    config = run_config("lm")
    config.unlock()
    config.update_from_flattened_dict({"init_from": str(src), "data.name": "text",
                                       "data.text_file": str(text), "total_steps": 2})
    config.lock()
    data = lm.make_data(config, process_index=0, process_count=1)
    assert data.tokenizer.vocab == source_vocab
    with pytest.raises(UserError, match=r"characters not in the vocabulary \(\d\): .*'ï', '☃'.*"
                                        r"data.unknown_char"):
        data.tokens("train")
    config.unlock()
    config.data.unknown_char = " "
    config.lock()
    data = lm.make_data(config, process_index=0, process_count=1)
    assert data.tokenizer.decode(data.tokens("train")).startswith("na ve  \n")
    train.train(config, str(tmp_path / "ft"))  # the source's embedding shape: it loads


def test_init_from_params_ema_takes_the_sources_ema_and_needs_one(tiny_run, tmp_path):
    """init_from_params=ema starts from the weights the source's samples use (its EMA);
    a source that kept no EMA is one error line."""
    src = tiny_run("diffusion")
    config = run_config("diffusion")
    config.unlock()
    config.update_from_flattened_dict({"init_from": str(src), "init_from_params": "ema",
                                       "total_steps": 1, "optim.lr": 0.0,
                                       "optim.warmup_steps": 0})
    config.lock()
    train.train(config, str(tmp_path / "ft"))
    parts = assemble.assemble(config, sharding.make_mesh(config.mesh))
    want, _, _ = Checkpointer(str(src), read_only=True).restore(6, parts.abstract_state)
    got, _, _ = Checkpointer(str(tmp_path / "ft"), read_only=True).restore(1, parts.abstract_state)
    ema, raw = jax.tree_util.tree_leaves(want.ema_params), jax.tree_util.tree_leaves(want.params)
    assert any(not np.array_equal(np.asarray(e), np.asarray(r)) for e, r in zip(ema, raw))
    for x, y in zip(ema, jax.tree_util.tree_leaves(got.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # lr 0: the source's EMA
    lm = run_config("lm")
    lm.unlock()
    lm.update_from_flattened_dict({"init_from": str(tiny_run("lm+lora")),  # optim.ema_decay 0
                                   "init_from_params": "ema"})
    lm.lock()
    with pytest.raises(UserError, match="kept no EMA params"):
        train.train(lm, str(tmp_path / "lm"))
