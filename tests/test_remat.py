"""Rematerialisation changes memory, never the math: same loss and gradients (fp32), jitted
as training runs them (XLA sees the checkpoints; eagerly each op would compile alone)."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.models import remat, transformer, unet

POLICIES = [p for p in remat.CHOICES if p != "none"]


def _grads_close(a, b, rtol=1e-6, atol=1e-7):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _count(fn, *args):
    """How many checkpoint (remat) equations the jaxpr of fn(*args) holds."""
    return len(re.findall(r"\b(?:remat2?|checkpoint)\[", str(jax.make_jaxpr(fn)(*args))))


@pytest.mark.parametrize("policy", POLICIES)
def test_lm_remat_gives_the_loss_and_grads_of_no_remat(policy):
    kw = dict(vocab_size=64, num_layers=3, num_heads=2, embed_dim=32, max_len=16)
    plain, rem = transformer.Transformer(**kw), transformer.Transformer(**kw, remat=policy)
    tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 17), 0, 64)
    params = jax.jit(plain.init)(jax.random.PRNGKey(1), tokens[:, :-1])["params"]
    assert jax.tree_util.tree_structure(
        jax.eval_shape(rem.init, jax.random.PRNGKey(1), tokens[:, :-1])["params"]) \
        == jax.tree_util.tree_structure(params), "remat must not change the params' names"

    def loss(model, p):
        logits = model.apply({"params": p}, tokens[:, :-1])
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1))

    (l0, g0), (l1, g1) = (jax.jit(jax.value_and_grad(lambda p, m=m: loss(m, p)))(params)
                          for m in (plain, rem))
    np.testing.assert_allclose(float(l1), float(l0), rtol=1e-6)
    _grads_close(g1, g0)
    grad_fn = lambda m: jax.grad(lambda p: loss(m, p))  # noqa: E731
    assert _count(grad_fn(plain), params) == 0
    assert _count(grad_fn(rem), params) == kw["num_layers"], "one remat per layer"


@pytest.mark.parametrize("policy", ["full", "dots_saveable"])
def test_unet_remat_gives_the_loss_and_grads_of_no_remat(policy):
    plain = unet.UNet(width=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
                      dropout=0.0, num_classes=3)
    rem = plain.clone(remat=policy)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
    t, y = jnp.array([3, 70]), jnp.array([0, 2])
    params = jax.jit(plain.init)(jax.random.PRNGKey(1), x, t, y)["params"]
    target = jax.random.normal(jax.random.PRNGKey(2), x.shape)

    def loss(model, p):
        return jnp.mean((model.apply({"params": p}, x, t, y, train=True) - target) ** 2)

    (l0, g0), (l1, g1) = (jax.jit(jax.value_and_grad(lambda p, m=m: loss(m, p)))(params)
                          for m in (plain, rem))
    np.testing.assert_allclose(float(l1), float(l0), rtol=1e-6)
    _grads_close(g1, g0)
    # 2 down + 2 middle + 4 up residual blocks, each under its own remat
    assert _count(jax.grad(lambda p: loss(rem, p)), params) == 8


def test_unknown_remat_policy_names_the_choices():
    with pytest.raises(ValueError, match=r"remat='everything': choose one of .*dots_saveable"):
        transformer.Transformer(remat="everything")
    with pytest.raises(ValueError, match=r"remat='everything': choose one of .*full"):
        unet.UNet(remat="everything")
