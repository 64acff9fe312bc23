r"""Bradley-Terry reward model on Shakespeare preference pairs (genjax/families/reward.py).

  python -m genjax.train --config=configs/reward_shakespeare.py:cpu --workdir=runs/rm_cpu \
      --config.init_from=runs/lm_cpu

Eval (validation pairs from the held-out plays): pairwise accuracy, loss, margin.
"""
from configs import dpo_shakespeare
from genjax import config_lib

PRESETS = {"tiny": {"optim.lr": 1e-3}, "cpu": {"optim.lr": 3e-4, "total_steps": 300,
                                               "optim.warmup_steps": 20}}


def get_config(arg: str | None = None):
    c = dpo_shakespeare.get_config(arg)
    c.unlock()
    c.family = "reward"
    del c["dpo"]
    c.best_metric = "eval/accuracy"
    c.best_mode = "max"
    c.reward = config_lib.ConfigDict()
    c.reward.margin = 0.0          # Bradley-Terry: -log sigma(r_w - r_l - margin)
    c.reward.center = 0.0          # + center * (r_w + r_l)^2 (TRL: 0.01 keeps rewards near 0)
    if (arg or "cpu") in PRESETS:
        config_lib.apply_preset(c, PRESETS, arg)
    c.lock()
    return c
