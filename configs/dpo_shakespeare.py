r"""DPO of the Shakespeare character LM on preference pairs (genjax/families/dpo.py).

  python -m genjax.train --config=configs/lm_shakespeare.py:cpu --workdir=runs/lm_cpu
  python -m genjax.train --config=configs/dpo_shakespeare.py:cpu --workdir=runs/dpo_cpu \
      --config.init_from=runs/lm_cpu

Presets are lm_shakespeare's (`tiny` for tests trains from random init: policy =
reference at step 0 all the same). data.preferences="" uses the synthetic pairs of
genjax/data/preferences.py (true line vs its words shuffled); DIR uses DIR/<split>.jsonl.
"""
from configs import lm_shakespeare
from genjax import config_lib

PRESETS = {"tiny": {"optim.lr": 1e-3}, "cpu": {"optim.lr": 1e-4, "total_steps": 300,
                                               "optim.warmup_steps": 20}}


def get_config(arg: str | None = None):
    c = lm_shakespeare.get_config(arg)
    c.unlock()
    c.family = "dpo"
    c.best_metric = "eval/loss"
    c.optim.weight_decay = 0.0
    c.dpo = config_lib.ConfigDict()
    c.dpo.beta = 0.1               # KL leash: loss sees beta * (log-ratio margin)
    c.dpo.loss_type = "sigmoid"    # sigmoid | ipo | hinge (anything else: an error)
    c.dpo.label_smoothing = 0.0    # cDPO: probability that a label is flipped (sigmoid)
    c.data.preferences = ""        # "" = synthetic Shakespeare pairs; DIR = DIR/<split>.jsonl
    c.data.max_pairs = 4000        # synthetic: at most this many pairs per split
    if (arg or "cpu") in PRESETS:  # the LM's presets set the shapes; these add to them
        config_lib.apply_preset(c, PRESETS, arg)
    c.lock()
    return c
