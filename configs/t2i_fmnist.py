r"""Text-to-image: the diffusion family's U-Net conditioned on captions of Fashion-MNIST
(genjax/data/captions.py) through a small transformer text encoder trained jointly
(pooled embedding + cross-attention, genjax/models/unet.py), with classifier-free guidance.

  python -m genjax.train --config=configs/t2i_fmnist.py:cpu --workdir=runs/t2i_cpu
  python -m genjax.sample --workdir=runs/t2i_cpu --prompt="a pair of sandals" --guidance=4 \
      --steps=50 --num_samples=16 --out=grid.png

A diff over configs/diffusion_fmnist.py (same presets, then the rows below).
Presets (`:arg`):
  tiny  tests: seconds on one CPU core.
  cpu   1200 steps: 1950 s on 2 cores shared with two other trainings (its train step takes
        minutes to compile on a CPU); accuracy in the README.
  gpu   the diffusion gpu U-Net with a 4-layer, 256-wide text encoder.
Ablations: --config.model.text.cross_attn_resolutions='()' (pooled embedding only),
--config.model.label_dropout=0 (no guidance possible), --config.sample.guidance=0|1|4.
"""
from ml_collections import ConfigDict

from configs import diffusion_fmnist
from genjax import config_lib

PRESETS = {
    "tiny": {"model.text.width": 16, "model.text.num_layers": 1, "model.text.num_heads": 1,
             "model.text.cross_attn_resolutions": (32,)},
    "cpu": {"model.text.width": 32, "model.text.num_layers": 2, "model.text.num_heads": 2,
            "model.text.cross_attn_resolutions": (8,), "model.num_heads": 2,
            "total_steps": 1200, "optim.warmup_steps": 50, "eval_every_steps": 600,
            "ckpt_every_steps": 600},
    "gpu": {"model.text.width": 256, "model.text.num_layers": 4, "model.text.num_heads": 4,
            "model.text.cross_attn_resolutions": (16, 8)},
}


def get_config(arg: str | None = None):
    name = arg or "cpu"
    if name not in PRESETS:  # before the diffusion config reports its own preset list
        raise config_lib.ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    c = diffusion_fmnist.get_config(name)
    c.unlock()
    c.model.conditioning = "text"      # class | text | none (genjax/families/diffusion.py)
    c.model.class_conditional = False  # the label is not an input; only the caption is
    c.model.label_dropout = 0.1        # here: p(caption -> null caption, all PAD), for guidance
    c.model.text = ConfigDict()        # genjax/models/text_encoder.py
    c.model.text.vocab_size = 0        # 0 = the caption tokenizer's (data/caption_tokenizer.py)
    c.model.text.max_words = 16        # caption/prompt length limit in words
    c.model.text.width = 64            # D of the encoder
    c.model.text.num_layers = 2
    c.model.text.num_heads = 2
    c.model.text.mlp_ratio = 4
    c.model.text.cross_attn_resolutions = (8,)  # U-Net sizes (H) attending to the tokens
    #                                             () = the pooled embedding only
    c.data.eval_captions = "heldout"   # phrasings of eval batches: heldout | train
    c.sample.guidance = 3.0            # 1 conditional, 0 unconditional (null caption), > 1 CFG
    config_lib.apply_preset(c, PRESETS, name)
    c.lock()
    return c
