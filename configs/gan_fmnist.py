r"""DCGAN on Fashion-MNIST (28x28 padded to 32x32), simultaneous Adam(2e-4, b1 0.5) updates
of both players, EMA generator for samples. Two recipes:
  DCGAN (Radford et al. 2016; the cpu preset): batch-normalised discriminator
    (model.d_norm=batch), non-saturating loss, no spectral norm.
  SNGAN (Miyato et al. 2018; the defaults, tiny and gpu): hinge loss, spectral-normalised
    discriminator without a norm.
DCGAN's N(0, 0.02) init assumes the discriminator's batch norm: without it, D's logits
start at ~0.005 (~0.05 with spectral norm; ~0.5 with the norm) and D sat near chance
for whole cpu runs while G drew blobs (issue #18).

  python -m genjax.train --config=configs/gan_fmnist.py:cpu --workdir=runs/gan_cpu
  python -m genjax.sample --workdir=runs/gan_cpu --num_samples=16

Presets (`:arg`):
  tiny  tests: seconds on one CPU core.
  cpu   DCGAN recipe, batch 32 x 5000 steps (~2.7 epochs; ~7.5 min alone at 367 images/s).
        At equal images, batch 32 x 2000 beat batch 64 x 1000: steps count more.
  gpu   DCGAN widths (64), batch 128, 30k steps, bf16 (SNGAN recipe).
Ablations:
  the earlier cpu recipe (SNGAN; batch 32 x 2000 steps: fid_fmnist 128.5, recall 0.06):
  --config.model.d_norm=none --config.model.loss=hinge --config.model.spectral_norm=True
  (with non_saturating, no spectral norm and r1_gamma=0.01 it mode-collapsed; with
  r1_gamma=1 its discriminator stayed at chance)
  --config.model.class_conditional=True           (projection discriminator)
  n_critic = 5 (WGAN-style alternation; D every step, G every 5th):
  --config.optim.groups.generator.every=5 --config.optim.groups.generator.offset=4
  TTUR (Heusel et al. 2017): --config.optim.groups.discriminator.lr=4e-4
"""
from ml_collections import ConfigDict

from genjax import config_lib
from genjax.evaluators import cas, image_quality, novelty

PRESETS = {
    "tiny": {"model.g_width": 8, "model.d_width": 8, "model.channel_mult": (2, 1),
             "model.latent_dim": 8, "batch_size": 8, "total_steps": 20, "log_every_steps": 5,
             "eval_every_steps": 10, "eval_batches": 2, "ckpt_every_steps": 10,
             "sample.num_samples": 4, **image_quality.TINY, **novelty.TINY, **cas.TINY},
    "cpu": {"model.g_width": 32, "model.d_width": 32, "model.channel_mult": (4, 2, 1),
            "model.latent_dim": 64, "model.d_norm": "batch", "model.loss": "non_saturating",
            "model.spectral_norm": False, "batch_size": 32, "total_steps": 5000,
            "optim.ema_decay": 0.99, "log_every_steps": 100, "eval_every_steps": 2500,
            "eval_batches": 4, "ckpt_every_steps": 2500},
    "gpu": {"model.g_width": 64, "model.d_width": 64, "model.channel_mult": (4, 2, 1),
            "model.latent_dim": 128, "batch_size": 128, "total_steps": 30_000,
            "compute_dtype": "bfloat16", "eval_every_steps": 5000, "eval_batches": 10,
            "ckpt_every_steps": 5000},
}


def get_config(arg: str | None = None):
    c = config_lib.base_config()
    c.family = "gan"
    c.eval_split = "test"          # fashion_mnist has train | test
    c.optim.name = "adam"          # DCGAN: Adam(2e-4, b1 = 0.5)
    c.optim.lr = 2e-4
    c.optim.b1 = 0.5
    c.optim.b2 = 0.999
    c.optim.schedule = "constant"
    c.optim.warmup_steps = 0
    c.optim.weight_decay = 0.0
    c.optim.clip_norm = 0.0
    c.optim.ema_decay = 0.999      # EMA of both players; samples use the generator's
    # One optimizer per player; any optimizer key may be overridden per group. A group
    # updates when step % every == offset (every=1: each step = simultaneous updates).
    c.optim.groups = ConfigDict({
        "generator": {"lr": 2e-4, "every": 1, "offset": 0},
        "discriminator": {"lr": 2e-4, "every": 1, "offset": 0},
    })

    c.model.name = "dcgan"         # genjax/models/dcgan.py
    c.model.latent_dim = 64        # z ~ N(0, I)
    c.model.g_width = 64
    c.model.d_width = 64
    c.model.channel_mult = (4, 2, 1)  # generator, coarse to fine (4x4 -> 32x32); D mirrors it
    c.model.g_norm = "batch"       # batch (current batch's statistics) | layer | none
    c.model.loss = "hinge"         # hinge | non_saturating
    c.model.r1_gamma = 0.0         # R1 weight on real images (0 = off); StyleGAN2-ADA heuristic
                                   # 2e-4 * res^2 / batch gives ~0.01 at 32x32 (10 for 1024^2)
    c.model.spectral_norm = True   # spectral normalisation of D (u vectors in model_state)
    c.model.d_norm = "none"        # none | batch (DCGAN: D's convs after the first; real and
                                   # fake batches then go through D separately)
    c.model.mbstd_group = 0        # > 0: D sees the minibatch std over groups of this many
                                   # (Karras et al. 2018), the cure for a collapsed G
    c.model.class_conditional = False  # True: label embedding in G, projection D
    c.model.num_classes = 0        # 0 = from the data's class names

    config_lib.set_image_data(c)

    c.sample.num_samples = 16

    # python -m genjax.evaluate (keys commented in each evaluator's settings()):
    c.evals.image_quality = image_quality.settings()  # fid_fmnist, kid, precision/recall...
    c.evals.novelty = novelty.settings()  # nearest training images: share of near-copies
    c.evals.cas = cas.settings()   # a classifier trained on samples, tested on real images

    config_lib.apply_preset(c, PRESETS, arg)
    c.lock()
    return c
