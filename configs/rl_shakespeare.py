r"""Online RL (RLOO with a KL leash) of the Shakespeare character LM (genjax/families/rl.py),
rewarded by a learned reward model (RLHF):

  python -m genjax.train --config=configs/lm_shakespeare.py:cpu --workdir=runs/lm_cpu
  python -m genjax.train --config=configs/reward_shakespeare.py:cpu --workdir=runs/rm_cpu \
      --config.init_from=runs/lm_cpu
  python -m genjax.train --config=configs/rl_shakespeare.py:cpu --workdir=runs/rl_cpu \
      --config.init_from=runs/lm_cpu --config.rl.reward_from=runs/rm_cpu

Ablation, the character reward instead (with reward_from kept, the model's score is still
logged as reward_model): --config.rl.reward=chars. PPO instead of RLOO:
--config.rl.algo=ppo [--config.rl.value_head=True] (genjax/families/rl_ppo.py).
Prompts: the speaker lines of the preference pairs (genjax/data/preferences.py).
Presets: `tiny` (tests, no reward run) uses the character reward (rl.reward=chars).
"""
from configs import dpo_shakespeare
from genjax import config_lib

PRESETS = {"tiny": {"optim.lr": 1e-3, "rl.max_new_tokens": 8, "rl.samples": 2,
                    "batch_size": 4, "rl.reward": "chars"},
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
    c.rl.reward = "model"          # model: reward_from's reward model | chars: the ablation
    c.rl.reward_from = ""          # workdir (or W/checkpoints/<step>) of a `reward` run
    c.rl.random_reward_model = False  # no reward_from: a fresh reward model, random head (tests)
    # The reward model's keys (filled from reward_from's checkpoint; vocab_size 0 = policy's).
    c.rl.reward_model = config_lib.ConfigDict(config_lib.to_dict(c.model))
    c.rl.reward_chars = "abcdefghijklmnopqrstuvwxyz "  # character reward: share of these
    c.rl.reward_ids = ()           # () = from reward_chars with the tokenizer (resolve_config)
    c.rl.valid_vocab = 0           # ids the tokenizer has (resolve_config); above: never drawn
    # The algorithm (genjax/families/rl_ppo.py; trl experimental/ppo's values):
    c.rl.algo = "rloo"             # rloo: REINFORCE, leave-one-out | ppo: clipped, E steps/rollout
    c.rl.ppo_epochs = 4            # ppo: optimizer steps on each rollout batch (E >= 1)
    c.rl.clip = 0.2                # ppo: ratio clipped to [1 - clip, 1 + clip]
    c.rl.value_head = False        # ppo: GAE on a linear value head (else RLOO advantages)
    c.rl.vf_coef = 0.1             # value loss weight
    c.rl.clip_value = 0.2          # value clipped to V_old +- clip_value (reward units)
    c.rl.gamma = 1.0               # GAE discount (per token)
    c.rl.lam = 0.95                # GAE lambda
    # The value head's own optimizer settings (parameter group "value", genjax/optim.py;
    # unused without a value head): a linear head from zero needs larger steps than the
    # policy's fine-tuning.
    c.optim.groups = config_lib.ConfigDict({"value": {"lr": 1e-3}})
    # c.evals.alignment (dpo_shakespeare's, with its presets): policy vs the frozen
    # reference under the gold preference (not rl.reward_chars'), win rate, KL, distinct-2
    if (arg or "cpu") in PRESETS:
        config_lib.apply_preset(c, PRESETS, arg)
    c.lock()
    return c
