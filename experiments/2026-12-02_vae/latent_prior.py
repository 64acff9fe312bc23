r"""Which prior to sample a trained VAE from: N(0, I) (the training prior), or a density fitted
to the aggregate posterior after training (Ghosh et al. 2020 "ex-post density estimation"):
one full-covariance Gaussian, one per class (a 10-component mixture with known assignments),
or a k-component GMM fitted by EM. Also decodes posterior means of held-out images (the
reconstruction ceiling: no prior can beat what the decoder draws from the true codes).

  python experiments/2026-12-02_vae/latent_prior.py --workdir=runs/img/vae --out=runs/vae_prior
  for f in runs/vae_prior/*.npz; do python -m genjax.evaluate --samples=$f \
      --only=image_quality; done

Writes uint8 [N, 28, 28] .npz files (the decoder's 32x32 mean images, centre-cropped).
"""
import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from genjax import inference
from genjax.data import idx as idx_lib
from genjax.models import vae as vae_lib

FMNIST = "/usr/share/datasets/fashion-mnist"


def load_split(name):
    folder = FMNIST if os.path.isdir(FMNIST) else "data/fashion-mnist"
    x = idx_lib.read_idx(os.path.join(folder, f"{name}-images-idx3-ubyte.gz"))
    y = idx_lib.read_idx(os.path.join(folder, f"{name}-labels-idx1-ubyte.gz"))
    x = x.astype(np.float32) / 127.5 - 1.0
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)), constant_values=-1.0)[..., None]
    return x, y.astype(np.int32)


def gmm_em(z, k, iters, rng):
    """Full-covariance GMM by EM (float64 numpy): (weights[k], means[k, D], covs[k, D, D])."""
    n, d = z.shape
    means = z[rng.choice(n, k, replace=False)]
    covs = np.repeat(np.cov(z.T)[None], k, 0)
    w = np.full(k, 1.0 / k)
    for _ in range(iters):
        logp = np.stack([_log_normal(z, means[j], covs[j]) for j in range(k)], 1) + np.log(w)
        logp -= logp.max(1, keepdims=True)
        r = np.exp(logp)
        r /= r.sum(1, keepdims=True)
        nk = r.sum(0) + 1e-9
        w = nk / n
        means = (r.T @ z) / nk[:, None]
        for j in range(k):
            c = z - means[j]
            covs[j] = (r[:, j, None] * c).T @ c / nk[j] + 1e-4 * np.eye(d)
    return w, means, covs


def _log_normal(z, m, c):
    l = np.linalg.cholesky(c)
    s = np.linalg.solve(l, (z - m).T)
    return -0.5 * np.sum(s ** 2, 0) - np.sum(np.log(np.diag(l)))


def draw(w, means, covs, n, rng):
    comp = rng.choice(len(w), n, p=w / w.sum())
    eps = rng.standard_normal((n, means.shape[1]))
    chol = np.linalg.cholesky(covs)
    return means[comp] + np.einsum("nij,nj->ni", chol[comp], eps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--num_samples", type=int, default=10000)
    ap.add_argument("--k", type=int, default=32)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    run = inference.load(args.workdir)
    model, params = run.model, run.params
    enc = jax.jit(lambda x: model.apply({"params": params}, x, method="encode")[0])
    dec = jax.jit(lambda z: vae_lib.mean_image(
        model.likelihood, model.apply({"params": params}, z, None, method="decode")))

    def batched(f, a, b=500):
        return np.concatenate([np.asarray(f(jnp.asarray(a[i:i + b]))) for i in range(0, len(a), b)])

    x_tr, y_tr = load_split("train")
    x_te, _ = load_split("t10k")
    z = batched(enc, x_tr).astype(np.float64)
    rng = np.random.default_rng(0)
    n, d = args.num_samples, z.shape[1]
    priors = {"standard": rng.standard_normal((n, d))}
    priors["gauss_full"] = draw(np.ones(1), z.mean(0)[None], np.cov(z.T)[None], n, rng)
    classes = np.unique(y_tr)
    priors["per_class"] = draw(np.array([np.mean(y_tr == c) for c in classes]),
                               np.stack([z[y_tr == c].mean(0) for c in classes]),
                               np.stack([np.cov(z[y_tr == c].T) for c in classes]), n, rng)
    priors[f"gmm{args.k}"] = draw(*gmm_em(z[:20000], args.k, 50, rng), n, rng)
    priors["recon_test"] = batched(enc, x_te[:n]).astype(np.float64)
    for name, zs in priors.items():
        img = batched(dec, zs.astype(np.float32))[:, 2:30, 2:30, 0]
        u8 = np.clip(np.round((img + 1.0) * 127.5), 0, 255).astype(np.uint8)
        np.savez(os.path.join(args.out, f"{name}.npz"), images=u8)
        print(name, u8.shape, flush=True)


if __name__ == "__main__":
    main()
