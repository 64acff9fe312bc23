r"""DPO of the Shakespeare character LM on preference pairs (genjax/families/dpo.py).

  python -m genjax.train --config=configs/lm_shakespeare.py:cpu --workdir=runs/lm_cpu
  python -m genjax.train --config=configs/dpo_shakespeare.py:cpu --workdir=runs/dpo_cpu \
      --config.init_from=runs/lm_cpu

Presets are lm_shakespeare's (`tiny` for tests trains from random init: policy =
reference at step 0 all the same). data.preferences="" uses the synthetic pairs of
genjax/data/preferences.py (true line vs its words shuffled); DIR uses DIR/<split>.jsonl,
e.g. pairs sampled from the policy and judged by the gold reward:
  python -m genjax.data.sample_preferences --workdir=runs/lm_cpu --out=data/prefs_lm_cpu
  ... --config.data.preferences=data/prefs_lm_cpu
Evaluate (win rate vs the reference under the gold reward, KL, distinct-2):
  python -m genjax.evaluate --workdir=runs/dpo_cpu --only=alignment
"""
from configs import lm_shakespeare
from genjax import config_lib
from genjax.evaluators import alignment

PRESETS = {"tiny": {"optim.lr": 1e-3, "evals.alignment.num_prompts": 4,
                    "evals.alignment.max_new_tokens": 16, "evals.alignment.span_chars": 10},
           "cpu": {"optim.lr": 1e-4, "total_steps": 300, "optim.warmup_steps": 20}}


def get_config(arg: str | None = None):
    c = lm_shakespeare.get_config(arg)
    c.unlock()
    c.family = "dpo"
    c.best_metric = "eval/loss"
    c.optim.weight_decay = 0.0
    c.model.dropout = 0.0          # policy and reference scored alike (checked: dpo.py)
    c.dpo = config_lib.ConfigDict()
    c.dpo.beta = 0.1               # KL leash: loss sees beta * (log-ratio margin)
    c.dpo.loss_type = "sigmoid"    # sigmoid | ipo | hinge (anything else: an error)
    c.dpo.label_smoothing = 0.0    # cDPO: probability that a label is flipped (sigmoid)
    c.dpo.valid_vocab = 0          # ids the tokenizer has (resolve_config); log-probs over them
    c.data.preferences = ""        # "" = synthetic Shakespeare pairs; DIR = DIR/<split>.jsonl
    c.data.max_pairs = 4000        # synthetic: at most this many pairs per split
    # policy vs the frozen reference under the gold preference: win rate, KL, distinct-2
    c.evals.alignment = alignment.settings()
    if (arg or "cpu") in PRESETS:  # the LM's presets set the shapes; these add to them
        config_lib.apply_preset(c, PRESETS, arg)
    c.lock()
    return c


def get_sweep(add, arg):
    """beta: the KL leash, for the reward-vs-KL curve (experiments/2026-12-01_align/)."""
    from genjax import sweep_lib as s
    if arg == "beta":
        add(s.sweep("dpo.beta", [0.03, 0.1, 0.3, 1.0]))
    else:
        raise ValueError(f"unknown sweep {arg!r}: choose beta")
