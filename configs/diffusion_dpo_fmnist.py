r"""Diffusion-DPO of the class-conditional Fashion-MNIST U-Net (genjax/families/diffusion_dpo.py).

  python -m genjax.train --config=configs/diffusion_fmnist.py:cpu --workdir=runs/diff_cpu
  python -m genjax.train --config=configs/diffusion_dpo_fmnist.py:cpu \
      --workdir=runs/diff_dpo_cpu --config.init_from=runs/diff_cpu

Pairs (config.data.pairs): "" = a real image (winner) vs its 4x4 patches permuted (loser),
genjax/data/image_pairs.py; or a folder of pairs sampled from the source run and ranked by a
separately trained reward classifier (best vs worst of K; eval on its held-out prompts):

  python -m genjax.train --config=configs/fmnist_reward_classifier.py:cpu \
      --workdir=runs/reward_clf_cpu
  python -m genjax.data.sample_image_preferences --workdir=runs/diff_cpu \
      --reward=runs/reward_clf_cpu --out=data/img_prefs --k=4 --prompts_per_class=100 \
      --guidance=1 --steps=20 --margin=0.1 --seed=0
  python -m genjax.train --config=configs/diffusion_dpo_fmnist.py:cpu \
      --workdir=runs/diff_dpo_sampled --config.init_from=runs/diff_cpu \
      --config.data.pairs=data/img_prefs

beta multiplies per-pixel mean errors, as in the paper's code, but of pixels, not SD
latents, so the paper's 5000 does not carry over: sweep it.
"""
from configs import diffusion_fmnist
from genjax import config_lib

PRESETS = {"tiny": {}, "cpu": {"optim.lr": 1e-4, "total_steps": 300, "optim.warmup_steps": 20,
                               "optim.ema_decay": 0.0, "model.dropout": 0.0}}


def get_config(arg: str | None = None):
    c = diffusion_fmnist.get_config(arg)
    c.unlock()
    c.family = "diffusion_dpo"
    c.model.label_dropout = 0.0    # both images of a pair keep their label
    c.model.dropout = 0.0          # as TRL's disable_dropout: policy = reference at step 0
    c.diffusion_dpo = config_lib.ConfigDict()
    c.diffusion_dpo.beta = 500.0   # logit = -(beta / 2) [(mse_w - mse_l) - (ref_w - ref_l)]
    c.data.pairs = ""              # "" = synthetic pairs (below); a folder of
                                   # genjax.data.sample_image_preferences (pairs_{train,test}.npz)
    c.data.pair_patch = 4          # loser: the winner with its patch x patch tiles permuted
    if (arg or "cpu") in PRESETS:
        config_lib.apply_preset(c, PRESETS, arg)
    c.lock()
    return c
