r"""Reward-filtered fine-tuning (the baseline of Diffusion-DPO on sampled pairs): the plain
diffusion objective on the best of K samples of each train prompt, ranked by the reward
classifier (genjax.data.sample_image_preferences' winners.npz), starting from the source run.

  python -m genjax.train --config=configs/diffusion_rft_fmnist.py:cpu --workdir=runs/diff_rft \
      --config.init_from=runs/diff_cpu --config.data.train_images=data/img_prefs/winners.npz

config.data.train_images changes only what training reads (genjax/data/image_loader.py):
eval loss, bits/dim and the evaluators' real train/test sets stay Fashion-MNIST's. The `cpu`
preset is Diffusion-DPO's (configs/diffusion_dpo_fmnist.py:cpu: 300 steps, lr 1e-4, no EMA,
no dropout) so the two compare at equal steps; label dropout stays (guidance still works).
"""
from configs import diffusion_dpo_fmnist, diffusion_fmnist
from genjax import config_lib

PRESETS = {"tiny": {}, "cpu": diffusion_dpo_fmnist.PRESETS["cpu"]}


def get_config(arg: str | None = None):
    c = diffusion_fmnist.get_config(arg)
    c.unlock()
    if (arg or "cpu") in PRESETS:
        config_lib.apply_preset(c, PRESETS, arg)
    c.lock()
    return c
