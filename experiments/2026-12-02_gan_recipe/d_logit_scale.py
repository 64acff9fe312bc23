"""D's logits and input gradient at DCGAN's N(0, 0.02) init on 64 Fashion-MNIST test images,
without a norm, with spectral norm, with batch norm (issue #18).

  PYTHONPATH=. python experiments/2026-12-02_gan_recipe/d_logit_scale.py
"""
import sys; sys.path.insert(0, ".")
import jax, jax.numpy as jnp, numpy as np
from genjax.models import dcgan
from genjax.data import idx
from genjax.data.image_loader import to_model_images
x = to_model_images(idx.read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")[:64, ..., None], (32, 32, 1))
x = jnp.asarray(x)
for kw in [dict(), dict(spectral_norm=True), dict(norm="batch")]:
    d = dcgan.Discriminator(width=32, channel_mult=(1, 2, 4), **kw)
    v = d.init(jax.random.PRNGKey(0), x)
    out = np.asarray(jax.jit(lambda v, x: d.apply(v, x))(v, x))
    g = jax.jit(jax.grad(lambda x: d.apply(v, x).sum()))(x)
    print(kw, "D(x) std %.4f  mean|D| %.4f  |dD/dx| per image %.4f" % (out.std(), np.abs(out).mean(), float(jnp.sqrt((g**2).sum((1,2,3))).mean())))
