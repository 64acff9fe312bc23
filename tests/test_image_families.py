"""Specification of the image families (diffusion, vae, gan) on tiny configs and fake
batches built with numpy: no dataset is read.

Keys are `rbg` keys: on CPU, XLA compiles every threefry draw for seconds, which would
make a model init alone take most of a minute. Everything is jitted (eager flax compiles
op by op).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import diffusion_fmnist, gan_fmnist, vae_fmnist
from genjax import config_lib, diffusion, families, optim, sharding, step
from genjax.families import REQUIRED

CONFIGS = {"diffusion": diffusion_fmnist, "vae": vae_fmnist, "gan": gan_fmnist}
FAMILIES = tuple(CONFIGS)


def key(i):
    return jax.random.key(i, impl="rbg")


def tiny(family, **model):
    """The family's tiny preset, resolved as the data would (1 channel, 10 classes)."""
    c = CONFIGS[family].get_config("tiny")
    c.data.channels = 1
    c.model.num_classes = 10
    c.model.update(model)
    return c


def fake_batch(config, batch_size=8, seed=0, mask=False):
    """Smooth random 'garments': blobs in [-1, 1], labels 0..9."""
    rs = np.random.RandomState(seed)
    s, ch = config.data.image_size, config.data.channels
    yy, xx = np.mgrid[0:s, 0:s] / s
    cx, cy, r = rs.uniform(0.3, 0.7, (3, batch_size, 1, 1))
    img = np.tanh(8 * (0.25 * r - (xx - cx) ** 2 - (yy - cy) ** 2))
    img = np.repeat(img[..., None], ch, -1).astype(np.float32)
    batch = {"image": img, "label": (np.arange(batch_size) % 10).astype(np.int32)}
    if mask:
        batch["mask"] = np.ones(batch_size, np.float32)
        batch["mask"][-2:] = 0.0
    return batch


def init(family, config, batch):
    """(loss module, model, params, model_state) with the contract's init_variables."""
    mod = families.get(family)
    model = mod.make_model(config)
    variables = jax.jit(lambda k: sharding.unbox(mod.init_variables(model, k, batch, config)))(
        key(0))
    variables = dict(variables)
    params = variables.pop("params")
    return mod, model, params, variables


def jitted(fn, **bound):
    """fn(*args, **bound) jitted over the arrays only (model/config are not hashable)."""
    return jax.jit(lambda *args: fn(*args, **bound))


# ------------------------------------------------------------------ shared contract
@pytest.mark.parametrize("family", FAMILIES)
def test_family_has_the_contract_exports_and_presets(family):
    mod = families.get(family)
    for name in REQUIRED + ("sample_images", "resolve_config", "throughput_unit"):
        assert callable(getattr(mod, name)), name
    for preset in ("tiny", "cpu", "gpu"):
        c = CONFIGS[family].get_config(preset)
        assert c.family == family
        with pytest.raises(AttributeError):
            c.model.no_such_key = 1  # locked
    with pytest.raises(config_lib.ConfigError, match="preset"):
        CONFIGS[family].get_config("huge")


@pytest.mark.parametrize("family", FAMILIES)
def test_params_carry_logical_axis_names(family):
    c = tiny(family, class_conditional=True)
    mod = families.get(family)
    model = mod.make_model(c)
    boxed = jax.eval_shape(lambda: mod.init_variables(model, key(0), fake_batch(c, 2), c))
    mesh = sharding.make_mesh(c.mesh)  # 8 fake devices: data=8
    shardings = sharding.param_shardings(boxed["params"], mesh, c.sharding_rules)
    assert len(jax.tree_util.tree_leaves(shardings)) == len(
        jax.tree_util.tree_leaves(sharding.unbox(boxed["params"])))
    named = [x for x in jax.tree_util.tree_leaves(
        boxed["params"], is_leaf=lambda x: isinstance(x, sharding.nn.Partitioned))
        if isinstance(x, sharding.nn.Partitioned)]
    assert any("conv_out" in x.names for x in named)


def test_mid_attention_is_the_one_self_attention_between_the_middle_blocks():
    """The tiny preset leaves it out (its middle is at 32 x 32); on, it adds exactly one
    Attention module, and the output keeps its shape."""
    b = fake_batch(tiny("diffusion"), 2)
    attention = {}
    for on in (False, True):
        c = tiny("diffusion", mid_attention=on)
        _, model, params, _ = init("diffusion", c, b)
        attention[on] = sorted(k for k in params if k.startswith("Attention"))
        out = jitted(model.apply)({"params": params}, b["image"], jnp.arange(2), b["label"])
        assert out.shape == b["image"].shape
    assert attention == {False: [], True: ["Attention_0"]}


def test_a_config_saved_before_mid_attention_existed_keeps_it():
    c = tiny("diffusion")
    c.unlock()
    del c.model["mid_attention"]  # a run's config.json from before the key
    assert CONFIGS["diffusion"].get_config().model.mid_attention
    assert families.get("diffusion").make_model(c).mid_attention


def test_model_shapes():
    c = tiny("diffusion", channel_mult=(1, 2), attn_resolutions=(16,), num_heads=2)
    b = fake_batch(c, 4)
    _, model, params, _ = init("diffusion", c, b)
    out = jitted(model.apply)({"params": params}, b["image"], jnp.arange(4), b["label"])
    assert out.shape == b["image"].shape and out.dtype == jnp.float32

    c = tiny("vae")
    _, model, params, state = init("vae", c, b)
    out, mean, logvar = jitted(model.apply)({"params": params}, b["image"], b["label"],
                                            jnp.zeros((4, c.model.latent_dim)))
    assert out.shape == (4, 32, 32, 2) and mean.shape == logvar.shape == (4, c.model.latent_dim)
    assert int(state["kl_warmup"]["count"]) == 0

    c = tiny("gan", spectral_norm=True, class_conditional=True)
    _, model, params, state = init("gan", c, b)
    assert set(params) == {"generator", "discriminator"} and set(state) == {"spectral"}
    z = jnp.zeros((4, c.model.latent_dim))
    fake = jitted(model.apply, method="generate")({"params": params}, z, b["label"])
    logits = jitted(model.apply, method="discriminate")({"params": params, **state}, fake,
                                                        b["label"])
    assert fake.shape == (4, 32, 32, 1) and logits.shape == (4,)


def test_a_unet_refuses_images_its_levels_cannot_halve_in_one_line():
    """28x28 through 4 levels would meet a 4x4 skip with 7x7 (a concatenate traceback)."""
    from genjax.models.unet import UNet
    x = jnp.zeros((1, 28, 28, 1))
    with pytest.raises(config_lib.ConfigError, match="28x28 images do not halve 3 times.*multiple of 8"):
        UNet(width=8, channel_mult=(1, 1, 1, 1), num_res_blocks=1).init(
            jax.random.key(0), x, jnp.zeros((1,), jnp.int32))
    UNet(width=8, channel_mult=(1, 1, 1), num_res_blocks=1).init(  # 28 -> 14 -> 7
        jax.random.key(0), x, jnp.zeros((1,), jnp.int32))


def test_unet_sees_the_timestep_and_the_label_at_small_widths():
    """Regression: at widths <= 32, GroupNorm has one channel per group, and an embedding
    *added* before it was normalised away: the net saw neither t nor the class."""
    c = tiny("diffusion")  # width 8
    b = fake_batch(c, 4)
    _, model, params, _ = init("diffusion", c, b)
    # the residual branches are zero-initialised: perturb every weight to open them
    leaves, tree = jax.tree_util.tree_flatten(params)
    noise = [0.3 * jax.random.normal(jax.random.fold_in(key(1), i), p.shape)
             for i, p in enumerate(leaves)]
    params = jax.tree_util.tree_unflatten(tree, [p + n for p, n in zip(leaves, noise)])
    apply = jitted(model.apply)
    out = lambda t, y: np.asarray(apply({"params": params}, b["image"], t, y))  # noqa: E731
    t_lo, t_hi = jnp.full(4, 1), jnp.full(4, 90)
    base = out(t_lo, b["label"])
    assert np.abs(out(t_hi, b["label"]) - base).mean() > 1e-2 * np.abs(base).mean()
    assert np.abs(out(t_lo, (b["label"] + 1) % 10) - base).mean() > 1e-2 * np.abs(base).mean()


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_is_a_finite_scalar_with_metrics(family):
    c = tiny(family)
    b = fake_batch(c)
    mod, model, params, state = init(family, c, b)
    loss, (metrics, new_state) = jitted(mod.loss_fn, model=model, config=c)(
        params, state, b, key(1))
    assert loss.shape == () and loss.dtype == jnp.float32 and np.isfinite(loss)
    assert metrics and all(np.isfinite(v) and np.shape(v) == () for v in metrics.values())
    assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)


@pytest.mark.parametrize("family", FAMILIES)
def test_eval_returns_masked_sums_and_count(family):
    # The GAN's default generator normalises with the current batch's statistics, so its
    # fakes depend on the batch's size by design; per-image LayerNorm makes them comparable.
    c = tiny(family, g_norm="layer") if family == "gan" else tiny(family)
    b = fake_batch(c, mask=True)
    mod, model, params, state = init(family, c, b)
    eval_fn = jitted(mod.eval_fn, model=model, config=c)
    sums = eval_fn(params, state, b)
    assert float(sums["count"]) == 6.0
    assert all(np.isfinite(v) for v in sums.values())
    # padded examples do not count: other content in the 2 padded rows, the same sums
    # (the same batch shape: the diffusion noise, drawn with the batch's shape, is the same)
    other = dict(b, image=b["image"].copy(), label=b["label"].copy())
    other["image"][-2:] = -other["image"][-2:]
    other["label"][-2:] = 9 - other["label"][-2:]
    sums_other = eval_fn(params, state, other)
    for k in sums:
        np.testing.assert_allclose(sums[k], sums_other[k], rtol=2e-4, atol=1e-4, err_msg=k)
    if family == "diffusion":  # its noise has the batch's shape: no 6-example comparison
        return
    # and the same sums come from the 6 real ones alone
    real = {k: v[:6] for k, v in b.items()}
    real["mask"] = np.ones(6, np.float32)
    sums6 = eval_fn(params, state, real)
    for k in sums:
        np.testing.assert_allclose(sums[k], sums6[k], rtol=2e-4, atol=1e-4, err_msg=k)


@pytest.mark.parametrize("family", FAMILIES)
def test_sample_images_follow_the_label(family):
    c = tiny(family, class_conditional=True)
    b = fake_batch(c, 4)
    mod, model, params, state = init(family, c, b)
    labels = (3, 7) if family != "diffusion" else (None,)  # (diffusion compiles per call)
    xs = [mod.sample_images(model, params, c, key(0), 3, label=label, model_state=state)
          for label in labels]
    for x in xs:
        assert x.shape == (3, 32, 32, 1) and x.dtype == jnp.float32
        assert np.all(np.isfinite(x)) and float(jnp.std(x)) > 0  # not one constant image
    if len(xs) == 2:  # the label reaches the generator: same key, other class, other images
        assert not np.allclose(xs[0], xs[1])


@pytest.mark.parametrize("family", FAMILIES)
def test_samples_are_split_over_the_params_mesh_and_equal_one_devices(family):
    """Params replicated on 8 devices (as genjax.inference.load places them): each device
    makes 1 of 8 samples, not all 8, and the samples equal those of one device."""
    c = tiny(family, class_conditional=True)
    mod, model, params, state = init(family, c, fake_batch(c, 4))
    mesh = sharding.make_mesh(dict(data=8, fsdp=1, tensor=1))
    on_mesh = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    on_one = jax.device_put(params, jax.devices()[0])
    x8 = mod.sample_images(model, on_mesh, c, jax.random.PRNGKey(0), 8, model_state=state)
    x1 = mod.sample_images(model, on_one, c, jax.random.PRNGKey(0), 8, model_state=state)
    assert x8.sharding.shard_shape(x8.shape)[0] == 1
    np.testing.assert_allclose(np.asarray(x8), np.asarray(x1), atol=1e-5)


# ------------------------------------------------------------------ training
def _train(family, config, batch, steps):
    """`steps` jitted genjax.step.train_step calls on one batch, the optimizer from config."""
    mod, model, params, model_state = init(family, config, batch)
    labels = mod.param_labels(params, config)
    tx = optim.make_optimizer(config, labels)
    state = step.init_state(params, model_state, tx, key(1), ema=bool(config.optim.ema_decay))
    train_step = jax.jit(functools.partial(
        step.train_step, loss_fn=functools.partial(mod.loss_fn, model=model, config=config),
        tx=tx, ema_decay=float(config.optim.ema_decay), labels=labels,
        group_active=optim.group_schedule(config, labels)))
    for _ in range(steps):
        state, metrics = train_step(state, batch)
    return mod, model, params, state, metrics


@pytest.mark.parametrize("family", [
    pytest.param("diffusion", marks=pytest.mark.slow),  # ~30 s: XLA compiles the U-Net's grad
    "vae"])
def test_train_steps_reduce_the_loss_on_a_fixed_batch(family):
    c = tiny(family, kl_warmup_steps=0) if family == "vae" else tiny(family)
    c.optim.warmup_steps = 0
    c.optim.lr = 3e-3
    b = fake_batch(c)
    mod, model, first, state, metrics = _train(family, c, b, 25)
    assert np.isfinite(float(metrics["loss"])) and int(state.total_skips) == 0
    # the same loss (same rng, same model_state) before and after
    loss = jitted(lambda p: mod.loss_fn(p, state.model_state, b, key(3), model=model,
                                        config=c)[0])
    before, after = float(loss(first)), float(loss(state.params))
    if family == "diffusion":  # mse of eps: 1 at init (zero output layer)
        assert after < 0.8 * before, (before, after)
    else:  # nats/dim, dominated by log(bin width) until the scales shrink
        assert after < before - 0.15, (before, after)


def test_gan_discriminator_learns_with_a_frozen_generator():
    c = tiny("gan")
    # alternating-update machinery: the generator never updates in these 20 steps
    c.optim.groups.generator.every = 1000
    c.optim.groups.generator.offset = 999
    c.optim.groups.discriminator.lr = 2e-3
    b = fake_batch(c)
    mod, model, first, state, metrics = _train("gan", c, b, 20)
    assert float(metrics["active/generator"]) == 0.0
    for a, z in zip(jax.tree_util.tree_leaves(first["generator"]),
                    jax.tree_util.tree_leaves(state.params["generator"])):
        np.testing.assert_array_equal(a, z)
    loss_d = jitted(lambda p: mod.loss_fn(p, state.model_state, b, key(3), model=model,
                                          config=c)[1][0]["loss_d"])
    assert float(loss_d(state.params)) < 0.7 * float(loss_d(first))


# ------------------------------------------------------------------ GAN gradients
@pytest.mark.parametrize("variant", [
    dict(loss="non_saturating", r1_gamma=1.0),
    dict(loss="hinge", r1_gamma=0.0, spectral_norm=True, class_conditional=True),
])
def test_gan_each_player_gets_gradient_only_from_its_own_loss(variant):
    c = tiny("gan", **variant)
    b = fake_batch(c)
    mod, model, params, state = init("gan", c, b)
    rng = key(5)
    same_rng = jax.random.clone(rng)  # the same draws again, on purpose (key-reuse checker)
    total = jax.jit(jax.grad(lambda p: mod.loss_fn(p, state, b, rng, model=model, config=c)[0]))(
        params)

    @jax.jit
    def own(p):  # grads of loss_g and loss_d *without* stop-gradients: their full gradients
        def one(i):
            return jax.grad(lambda p: jnp.mean(mod.player_losses(
                p, state, b, jax.random.clone(same_rng), model=model, config=c,
                route=False)[0][i]))(p)
        return one(0), one(1)
    g_own, d_own = own(params)
    close = functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6)
    jax.tree_util.tree_map(close, total["generator"], g_own["generator"])
    jax.tree_util.tree_map(close, total["discriminator"], d_own["discriminator"])
    # and the routing matters: loss_g does move D and loss_d does move G without it
    assert max(float(jnp.max(jnp.abs(x))) for x in
               jax.tree_util.tree_leaves(g_own["discriminator"])) > 1e-6
    labels = mod.param_labels(params, c)
    assert set(jax.tree_util.tree_leaves(labels["generator"])) == {"generator"}
    assert set(jax.tree_util.tree_leaves(labels["discriminator"])) == {"discriminator"}


def test_gan_spectral_norm_state_advances_in_training_only():
    c = tiny("gan", spectral_norm=True)
    b = fake_batch(c)
    mod, model, params, state = init("gan", c, b)
    _, (_, new_state) = jitted(mod.loss_fn, model=model, config=c)(params, state, b, key(0))
    changed = [not np.allclose(a, z) for a, z in zip(jax.tree_util.tree_leaves(state),
                                                     jax.tree_util.tree_leaves(new_state))
               if a.size > 1]  # the logit layer's u has one entry: always +-1
    assert changed and all(changed)


# ------------------------------------------------------------------ diffusion maths
@pytest.mark.parametrize("kind", diffusion.SCHEDULES)
def test_schedules_are_monotone_in_0_1(kind):
    s = diffusion.make_schedule(kind, 1000)
    ab = np.asarray(s.alphas_cumprod)
    assert np.all(np.diff(ab) < 0) and ab[0] > 0.99 and 0 < ab[-1] < 1e-3
    assert np.all((np.asarray(s.betas) > 0) & (np.asarray(s.betas) <= 0.999))


@pytest.mark.parametrize("param", diffusion.PARAMETERIZATIONS)
def test_prediction_conversions_round_trip(param):
    rs = np.random.RandomState(0)
    x0, eps = rs.randn(2, 5, 4, 4, 1).astype(np.float32)
    s = diffusion.make_schedule("cosine", 1000)
    t = jnp.array([0, 10, 500, 900, 999])
    x_t = diffusion.q_sample(s, x0, t, eps)
    ab = diffusion._b(s.alphas_cumprod[t], x0)
    pred = diffusion.pred_from_x0_eps(param, x0, eps, ab)
    x0_back, eps_back = diffusion.x0_eps_from_pred(param, pred, x_t, ab)
    # conversions through eps divide by sqrt(ab) (tiny at t = T-1): compare where stable
    ok = slice(0, 4) if param == "eps" else slice(0, 5)
    np.testing.assert_allclose(x0_back[ok], x0[ok], atol=2e-3)
    ok = slice(1, 5) if param == "x0" else slice(0, 5)
    np.testing.assert_allclose(eps_back[ok], eps[ok], atol=2e-3)
    # v = sqrt(ab) eps - sqrt(1 - ab) x0 recovers both
    v = diffusion.pred_from_x0_eps("v", x0, eps, ab)
    np.testing.assert_allclose(diffusion.x0_eps_from_pred("v", v, x_t, ab)[0], x0, atol=1e-4)


def _oracle(param, schedule, x_star):
    """The ideal network when the data are the single image x_star."""
    def apply_fn(x, t_B, labels):
        ab = diffusion._b(schedule.alphas_cumprod[t_B], x)
        eps = (x - jnp.sqrt(ab) * x_star) / jnp.sqrt(1.0 - ab)
        return diffusion.pred_from_x0_eps(param, jnp.broadcast_to(x_star, x.shape), eps, ab)
    return apply_fn


@pytest.mark.parametrize("param", diffusion.PARAMETERIZATIONS)
def test_samplers_recover_the_data_point_under_an_oracle(param):
    s = diffusion.make_schedule("linear", 100)
    x_star = jnp.asarray(np.random.RandomState(1).uniform(-0.9, 0.9, (1, 4, 4, 1)), jnp.float32)
    fn = _oracle(param, s, x_star)
    shape = (3, 4, 4, 1)
    for out in (diffusion.ddim_sample(fn, s, key(0), shape, parameterization=param,
                                      num_steps=10, eta=0.5),
                diffusion.ddpm_sample(fn, s, key(0), shape, parameterization=param),
                diffusion.ddpm_sample(fn, s, key(0), shape, parameterization=param,
                                      num_steps=7, var_type="large")):
        assert out.shape == shape
        np.testing.assert_allclose(out, jnp.broadcast_to(x_star, shape), atol=1e-4)


def test_one_ddim_step_goes_from_t_minus_1_to_the_posterior_mean():
    """Data N(0, s^2): E[x0 | x_t] = sqrt(ab) s^2 x_t / (ab s^2 + 1 - ab) in closed form.
    One step from x_T must return that mean at t = T - 1 (std ~0.002 here); the grid that
    started at t = 0 returned x_T itself (std ~1)."""
    np.testing.assert_array_equal(diffusion.timestep_pairs(1000, 1), ([999], [-1]))
    s = diffusion.make_schedule("linear", 1000)
    var = 0.3 ** 2

    def posterior_mean(x, t_B, labels):  # an x0-prediction net
        ab = diffusion._b(s.alphas_cumprod[t_B], x)
        return jnp.sqrt(ab) * var * x / (ab * var + 1.0 - ab)
    x_T = jax.random.normal(key(3), (256, 2, 2, 1))
    out = diffusion.ddim_sample(posterior_mean, s, key(4), x_T.shape,
                                parameterization="x0", num_steps=1, x_T=x_T)
    ab = float(s.alphas_cumprod[999])
    np.testing.assert_allclose(out, np.sqrt(ab) * var * x_T / (ab * var + 1 - ab), atol=1e-6)
    with pytest.raises(config_lib.ConfigError, match="1001 sampling steps on a schedule of 1000"):
        diffusion.timestep_pairs(1000, 1001)


def test_ddim_with_eta_0_is_deterministic_given_x_T():
    c = tiny("diffusion")
    b = fake_batch(c, 2)
    _, model, params, _ = init("diffusion", c, b)
    params = jax.tree_util.tree_map(  # a non-trivial network (its output conv starts at 0)
        lambda p: p + 0.05 * jax.random.normal(key(9), p.shape), params)
    fn = lambda x, t, y: model.apply({"params": params}, x, t, y)  # noqa: E731
    s = diffusion.make_schedule("cosine", 100)
    x_T = jax.random.normal(key(0), (2, 32, 32, 1))
    run = jax.jit(lambda rng, eta: diffusion.ddim_sample(  # noqa: E731
        fn, s, rng, x_T.shape, parameterization="eps", num_steps=4, eta=eta, x_T=x_T,
        labels=jnp.array([1, 2]), guidance=1.0, null_label=10))
    a, z = run(key(1), 0.0), run(key(2), 0.0)
    np.testing.assert_array_equal(a, z)
    assert not np.allclose(run(key(1), 1.0), run(key(2), 1.0))


def test_guidance_scale_0_is_unconditional_1_conditional_else_extrapolates():
    def fn(x, t_B, labels):  # a fake network whose output reveals the label it saw
        return x if labels is None else x + labels.astype(jnp.float32)[:, None, None, None]
    x, t, y = jnp.zeros((2, 2, 2, 1)), jnp.array([3, 4]), jnp.array([2, 5])
    null = 10
    np.testing.assert_allclose(diffusion.guided(fn, x, t, y, 1.0, null), fn(x, t, y))
    np.testing.assert_allclose(diffusion.guided(fn, x, t, y, 0.0, null),
                               fn(x, t, jnp.full_like(y, null)))
    np.testing.assert_allclose(diffusion.guided(fn, x, t, y, 3.0, null),
                               null + 3.0 * (y[:, None, None, None] - null) + x)
    np.testing.assert_allclose(diffusion.guided(fn, x, t, None, 3.0, null), x)  # unconditional


def test_variational_bound_terms_vanish_for_an_exact_model():
    s = diffusion.make_schedule("linear", 100)
    rs = np.random.RandomState(0)
    x0 = jnp.asarray(np.round(rs.uniform(-1, 1, (4, 4, 4, 1)) * 127.5) / 127.5, jnp.float32)
    t = jnp.array([1, 30, 60, 99])
    x_t = diffusion.q_sample(s, x0, t, jnp.asarray(rs.randn(*x0.shape), jnp.float32))
    vlb_term = jax.jit(diffusion.vlb_term, static_argnums=(1, 2))
    terms = vlb_term(s, "x0", "small", x0, x_t, t, x0)  # predicts x0 exactly
    np.testing.assert_allclose(terms, 0.0, atol=1e-3)
    # a wrong prediction costs nats (less at high noise, where x0 matters less)
    wrong = vlb_term(s, "x0", "small", x0, x_t, t, -x0)
    assert np.all(wrong > 1e-5) and np.all(np.diff(wrong) < 0) and wrong[0] > 100
    # the t = 0 term is the decoder's NLL: >= 0, ~0 for an exact, confident model
    nll0 = vlb_term(s, "x0", "small", x0, x0, jnp.zeros(4, jnp.int32), x0)
    assert np.all(nll0 >= 0)
    assert float(jnp.max(diffusion.prior_kl(s, x0))) < 1e-2


@pytest.mark.parametrize("T,k", [(1000, 8), (100, 2), (10, 20)])
def test_eval_strata_partition_the_timesteps_after_0(T, k):
    from genjax.families.diffusion import eval_strata
    lo, hi = eval_strata(T, k)
    assert lo[0] == 1 and hi[-1] == T and np.all(lo[1:] == hi[:-1]) and np.all(hi > lo)
    assert len(lo) <= k


def test_diffusion_sampler_options_and_steps():
    c = tiny("diffusion", parameterization="v")
    b = fake_batch(c, 2)
    mod, model, params, _ = init("diffusion", c, b)
    for kw in (dict(sampler="ddpm", steps=3, guidance=0.0, label=4),
               dict(sampler="ddim", steps=2, eta=1.0, guidance=3.0)):
        x = mod.sample_images(model, params, c, key(0), 2, **kw)
        assert x.shape == (2, 32, 32, 1) and np.all(np.isfinite(x))
    with pytest.raises(ValueError, match="sampler"):
        mod.sample_images(model, params, c, key(0), 2, sampler="euler")


# ------------------------------------------------------------------ VAE
@pytest.mark.parametrize("likelihood", ["logistic", "bernoulli"])
def test_vae_iwae_nll_is_at_most_minus_elbo(likelihood):
    c = tiny("vae", likelihood=likelihood, iwae_samples=16)
    b = fake_batch(c, mask=False)
    mod, model, params, state = init("vae", c, b)
    c1 = tiny("vae", likelihood=likelihood, iwae_samples=1)  # k = 1: the ELBO itself
    s1 = jitted(mod.eval_fn, model=model, config=c1)(params, state, b)
    np.testing.assert_allclose(s1["nll_iwae"], -s1["elbo"], rtol=1e-4)
    # weights moved off their init, so that log w varies with z and the 16-draw bound is
    # well inside the ELBO (2.7x / 40x here); at init the two agree within Monte Carlo noise
    # (the ELBO's KL is in closed form), too close for an inequality
    params = jax.tree_util.tree_map(
        lambda p: p + 0.2 * jax.random.normal(key(9), p.shape), params)
    sums = jitted(mod.eval_fn, model=model, config=c)(params, state, b)
    assert float(sums["nll_iwae"]) < 0.9 * -float(sums["elbo"])


def test_vae_kl_warmup_counts_training_calls():
    c = tiny("vae", kl_warmup_steps=4, beta=2.0)
    b = fake_batch(c)
    mod, model, params, state = init("vae", c, b)
    weights = []
    loss_fn = jitted(mod.loss_fn, model=model, config=c)
    for _ in range(6):
        _, (metrics, state) = loss_fn(params, state, b, key(0))
        weights.append(float(metrics["kl_weight"]))
    np.testing.assert_allclose(weights, [0.0, 0.5, 1.0, 1.5, 2.0, 2.0])
    assert int(state["kl_warmup"]["count"]) == 6


def test_vae_reconstructions_and_interpolations():
    c = tiny("vae", class_conditional=True)
    b = fake_batch(c, 3)
    mod, model, params, _ = init("vae", c, b)
    rec = mod.reconstruct(model, params, c, b["image"], b["label"])
    assert rec.shape == b["image"].shape
    path = mod.interpolate(model, params, c, b["image"][:2], b["image"][1:], num_steps=5,
                           labels=b["label"][:2])
    assert path.shape == (2, 5, 32, 32, 1)
    # the path starts and ends at the reconstructions of its end points
    np.testing.assert_allclose(path[:, 0], mod.reconstruct(model, params, c, b["image"][:2],
                                                           b["label"][:2]), atol=1e-5)


def test_vae_prior_temperature_scales_z():
    """Samples at temperature t decode t * z for the same draw z ~ N(0, I); t = 0 decodes
    the prior's mean for every sample (the standard prior; the fitted one:
    tests/test_latent_prior.py)."""
    c = tiny("vae")
    c.sample.prior = "standard"
    b = fake_batch(c, 3)
    mod, model, params, _ = init("vae", c, b)
    z = jax.random.normal(key(3), (4, model.latent_dim))
    half = mod.sample_images(model, params, c, key(3), 4, temperature=0.5)
    np.testing.assert_allclose(half, mod._decode_mean(model, params, 0.5 * z, None), atol=1e-6)
    assert not np.allclose(half, mod.sample_images(model, params, c, key(3), 4))  # t = 1
    zero = np.asarray(mod.sample_images(model, params, c, key(3), 4, temperature=0.0))
    np.testing.assert_array_equal(zero, np.broadcast_to(zero[:1], zero.shape))
    with pytest.raises(ValueError, match="temperature"):
        mod.sample_images(model, params, c, key(3), 4, temperature=-1.0)


# ----------------------------------------------------------------------- minibatch std
def test_minibatch_std_channel_is_the_group_std_and_keeps_groups_apart():
    from genjax.models.dcgan import minibatch_std
    h = np.zeros((4, 2, 2, 3), np.float32)
    h[1] = 2.0                       # group 0 = examples {0, 1}: values 0 and 2 -> std 1
    h[2], h[3] = 5.0, 5.0            # group 1 = {2, 3}: identical -> std sqrt(1e-8)
    out = np.asarray(minibatch_std(jnp.asarray(h), 2))
    assert out.shape == (4, 2, 2, 4)
    np.testing.assert_allclose(out[..., :3], h)                      # features untouched
    np.testing.assert_allclose(out[:2, ..., 3], 1.0, rtol=1e-6)
    np.testing.assert_allclose(out[2:, ..., 3], 1e-4, rtol=1e-3)
    with pytest.raises(ValueError, match="not a multiple of group"):
        minibatch_std(jnp.asarray(h[:3]), 2)


def test_gan_with_minibatch_std_scores_real_images_independently_of_fakes():
    """D runs on [real; fake] at once: with group | batch, a real image's logit must not
    depend on the fake half (else D could read the fakes while judging the reals)."""
    from genjax.models import dcgan
    model = dcgan.DCGAN(image_shape=(8, 8, 1), latent_dim=4, g_width=4, d_width=4,
                        channel_mult=(2, 1), mbstd_group=2)
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 8, 8, 1))
    variables = model.init(jax.random.PRNGKey(1), jnp.zeros((8, 4)))
    d = model.apply(variables, x, method="discriminate")
    x2 = x.at[4:].set(-x[4:])        # change only the fake half
    d2 = model.apply(variables, x2, method="discriminate")
    np.testing.assert_array_equal(np.asarray(d[:4]), np.asarray(d2[:4]))
    assert not np.allclose(np.asarray(d[4:]), np.asarray(d2[4:]))
    # 2 reals + 2 fakes with groups of 4 would be one group of both: refused
    c = tiny("gan", mbstd_group=4)
    mod, model, params, state = init("gan", c, fake_batch(c, 4))
    with pytest.raises(config_lib.ConfigError, match="mbstd_group=4: a batch of 2 real"):
        mod.player_losses(params, state, fake_batch(c, 2), key(0), model=model, config=c)
