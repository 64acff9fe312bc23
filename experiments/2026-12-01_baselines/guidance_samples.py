r"""Class-conditional samples of a diffusion run at a given guidance, as an .npz for
`genjax.evaluate --samples` (images uint8 [N, 32, 32, 1], labels = classes 0..9 in turn).

  python experiments/2026-12-01_baselines/guidance_samples.py --workdir=runs/img/diffusion \
      --guidance=4 --out=/tmp/diff_g4.npz
  python -m genjax.evaluate --samples=/tmp/diff_g4.npz --only=image_quality

How README's diffusion row at guidance 4 was measured on the run trained with guidance 3 in
its config (the sampler setting does not touch training).
"""
import argparse

import jax
import numpy as np

from genjax import image_grid, inference


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--guidance", type=float, required=True)
    p.add_argument("--num_samples", type=int, default=1000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    loaded = inference.load(a.workdir, which="ema")
    xs, ys = [], []
    for i in range(0, a.num_samples, a.batch):
        labels = np.arange(i, i + a.batch) % 10
        x = loaded.family.sample_images(loaded.model, loaded.params, loaded.config,
                                        jax.random.PRNGKey(1000 + i), a.batch, label=labels,
                                        guidance=a.guidance)
        xs.append(np.asarray(x))
        ys.append(labels)
        print(f"{i + a.batch}/{a.num_samples}", flush=True)
    u8 = image_grid.to_uint8(np.concatenate(xs))
    np.savez(a.out, images=u8, labels=np.concatenate(ys).astype(np.int32))


if __name__ == "__main__":
    main()
