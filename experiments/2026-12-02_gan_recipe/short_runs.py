"""Short GAN runs (issue #18) outside genjax.train: genjax's own assembled, jitted step on
Fashion-MNIST read straight from the IDX files, then fid_fmnist on 2000 samples vs 2000
test images (floor 1.73), precision/recall and the classifier's class histogram.

  PYTHONPATH=. python experiments/2026-12-02_gan_recipe/short_runs.py NAME STEPS [k=v ...]
k=v: any config key over configs/gan_fmnist.py:cpu (python literal), plus
  mode=genjax      the library's simultaneous step (default)
  mode=alt         alternating: D step, then G step against the updated D (DCGAN's loop)
  mode=ckpt:W:STEP:raw   no training: score checkpoint STEP of run W
Writes OUT/NAME_{raw,ema}.png (64 samples); OUT = $GAN_OUT or /tmp.
"""
import ast
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, ".")
from configs import gan_fmnist  # noqa: E402
from genjax import assemble as assemble_lib, sharding, image_grid  # noqa: E402
from genjax.data import idx  # noqa: E402
from genjax.data.image_loader import to_model_images  # noqa: E402
from genjax.evaluators import image_quality  # noqa: E402
from genjax.evaluators.feature_net import load_feature_net  # noqa: E402
from genjax.families import gan  # noqa: E402

name, steps = sys.argv[1], int(sys.argv[2])
kv = dict(a.split("=", 1) for a in sys.argv[3:])
mode = kv.pop("mode", "genjax")
c = gan_fmnist.get_config("cpu")
c.unlock()
c.data.channels = 1
c.model.num_classes = 10
c.total_steps = steps
for k, v in kv.items():
    node = c
    *ps, leaf = k.split(".")
    for p in ps:
        node = node[p] if p in node else sys.exit(f"unknown config key {k!r}")
    if leaf not in node:  # a misspelt key would add itself and change nothing
        sys.exit(f"unknown config key {k!r}")
    try:
        v = ast.literal_eval(v)
    except Exception:
        pass
    node[leaf] = v
B = int(c.batch_size)

D = "/usr/share/datasets/fashion-mnist/"
x_train = to_model_images(idx.read_idx(D + "train-images-idx3-ubyte.gz")[..., None], (32, 32, 1))
x_test = to_model_images(idx.read_idx(D + "t10k-images-idx3-ubyte.gz")[..., None], (32, 32, 1))
y_dummy = np.zeros((B,), np.int32)

mesh = sharding.make_mesh(c.mesh)
parts = assemble_lib.assemble(c, mesh)
state = parts.init_state()
model = parts.model
rs = np.random.RandomState(0)


def batches():
    while True:
        perm = rs.permutation(len(x_train))
        for i in range(0, len(perm) - B + 1, B):
            yield {"image": x_train[perm[i:i + B]], "label": y_dummy}


if mode == "genjax":
    step = parts.train_step
else:  # alternating: D step on (real, G(z)), then G step against the *updated* D
    tx = parts.tx

    def loss_d_fn(params, ms, batch, rng):
        (lg, ld, r1, dr, df), ns = gan.player_losses(params, ms, batch, rng, model=model,
                                                      config=c)
        return jnp.mean(ld), (ns, jnp.mean(lg))

    def loss_g_fn(params, ms, batch, rng):
        (lg, ld, r1, dr, df), ns = gan.player_losses(params, ms, batch, rng, model=model,
                                                      config=c)
        return jnp.mean(lg), (jnp.mean(ld), dr, df)

    @jax.jit
    def step(state, batch):
        rng = jax.random.wrap_key_data(jax.random.fold_in(state.rng, state.step))
        k1, k2 = jax.random.split(rng)
        (ld, (ms, _)), gd = jax.value_and_grad(loss_d_fn, has_aux=True)(
            state.params, state.model_state, batch, k1)
        gd = {"generator": jax.tree_util.tree_map(jnp.zeros_like, gd["generator"]),
              "discriminator": gd["discriminator"]}
        # update D only: multi_transform with G's grads zero still moves G's Adam moments,
        # so keep G's params/opt-state from before
        up, os1 = tx.update(gd, state.opt_state, state.params)
        p1 = optax.apply_updates(state.params, up)
        p1 = {"generator": state.params["generator"], "discriminator": p1["discriminator"]}
        os1 = optax.MultiTransformState({"generator": state.opt_state.inner_states["generator"],
                                         "discriminator": os1.inner_states["discriminator"]})
        (lg, (_, dr, df)), gg = jax.value_and_grad(loss_g_fn, has_aux=True)(p1, ms, batch, k2)
        gg = {"generator": gg["generator"],
              "discriminator": jax.tree_util.tree_map(jnp.zeros_like, gg["discriminator"])}
        up, os2 = tx.update(gg, os1, p1)
        p2 = optax.apply_updates(p1, up)
        p2 = {"generator": p2["generator"], "discriminator": p1["discriminator"]}
        os2 = optax.MultiTransformState({"generator": os2.inner_states["generator"],
                                         "discriminator": os1.inner_states["discriminator"]})
        new = state.replace(step=state.step + 1, params=p2, opt_state=os2, model_state=ms)
        return new, {"loss_d": ld, "loss_g": lg, "d_real": jnp.mean(dr), "d_fake": jnp.mean(df)}

if mode.startswith("ckpt:"):  # ckpt:W:STEP:which -- no training, score a checkpoint
    from genjax.inference import load
    _, w, st, which = mode.split(":")
    ld = load(w, which=which, step=int(st))
    model, c, steps = ld.model, ld.config, 0
    state = state.replace(params=ld.params)
it = batches()
t0 = time.time()
acc = {}
for s in range(1, steps + 1):
    b = assemble_lib.shard_batch(parts, next(it))
    state, m = step(state, b)
    for k in ("loss_d", "loss_g", "d_real", "d_fake"):
        acc.setdefault(k, []).append(m[k])
    if s == 1:
        jax.block_until_ready(m["loss_d"])
        print(f"compiled+1 step {time.time() - t0:.1f}s", flush=True)
        t0 = time.time()
    if s % 50 == 0:
        vals = {k: float(np.mean(jax.device_get(v))) for k, v in acc.items()}
        acc = {}
        print(f"{s} " + " ".join(f"{k}={v:.3f}" for k, v in vals.items())
              + f" {(s - 1) * B / (time.time() - t0):.0f} img/s", flush=True)

net = load_feature_net(c.data)
rf = net.features(x_test[:2000])
for which, params in (("raw", state.params), ("ema", state.ema_params)):
    if not jax.tree_util.tree_leaves(params) or (mode.startswith("ckpt") and which == "ema"):
        continue
    imgs = np.concatenate([np.asarray(gan.sample_images(model, params, c,
                                                        jax.random.PRNGKey(100 + i), 250))
                           for i in range(8)])
    image_grid.save_grid(imgs[:64], os.path.join(os.environ.get("GAN_OUT", "/tmp"), f"{name}_{which}.png"))
    ff = net.features(imgs)
    p = net.probs_from_features(ff)
    hist = np.bincount(p.argmax(1), minlength=10) / len(p)
    fid = image_quality.fid_from_features(rf, ff)
    pr = image_quality.precision_recall(rf, ff[:2000])
    print(f"RESULT {name} {which} steps={steps} mode={mode} {kv} fid2k={fid:.1f} "
          f"prec={pr[0]:.2f} rec={pr[1]:.2f} classes={np.round(hist, 2).tolist()}", flush=True)
