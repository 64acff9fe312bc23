r"""Online RL (RLOO with a KL leash) of the Shakespeare character LM (genjax/families/rl.py).

  python -m genjax.train --config=configs/lm_shakespeare.py:cpu --workdir=runs/lm_cpu
  python -m genjax.train --config=configs/rl_shakespeare.py:cpu --workdir=runs/rl_cpu \
      --config.init_from=runs/lm_cpu

Prompts: the speaker lines of the preference pairs (genjax/data/preferences.py).
Reward: the gold reward (share of completion characters in rl.reward_chars).
"""
from configs import dpo_shakespeare
from genjax import config_lib

PRESETS = {"tiny": {"optim.lr": 1e-3, "rl.max_new_tokens": 8, "rl.samples": 2,
                    "batch_size": 4},
           "cpu": {"optim.lr": 1e-4, "total_steps": 300, "optim.warmup_steps": 20,
                   "batch_size": 8}}


def get_config(arg: str | None = None):
    c = dpo_shakespeare.get_config(arg)
    c.unlock()
    c.family = "rl"
    del c["dpo"]
    c.best_metric = "eval/reward"
    c.best_mode = "max"
    c.rl = config_lib.ConfigDict()
    c.rl.beta = 0.05               # KL leash folded into the reward (TRL RLOO: 0.05)
    c.rl.samples = 4               # K completions per prompt (RLOO baseline: the other K-1)
    c.rl.max_new_tokens = 32       # completion length N (no stop tokens)
    c.rl.reward_chars = "abcdefghijklmnopqrstuvwxyz "  # gold reward: share of these
    c.rl.reward_ids = ()           # () = from reward_chars with the tokenizer (resolve_config)
    # c.evals.alignment (dpo_shakespeare's, with its presets): policy vs the frozen
    # reference under the gold preference (not rl.reward_chars'), win rate, KL, distinct-2
    if (arg or "cpu") in PRESETS:
        config_lib.apply_preset(c, PRESETS, arg)
    c.lock()
    return c
