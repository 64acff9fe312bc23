r"""Distil a character LM on Shakespeare into a half-size student (genjax/families/distill.py).

  python -m genjax.train --config=configs/lm_shakespeare.py:cpu --workdir=runs/lm_cpu
  python -m genjax.train --config=configs/distill_shakespeare.py:cpu --workdir=runs/student \
      --config.init_from=runs/lm_cpu
  python -m genjax.sample --workdir=runs/student --prompt="ROMEO:"

The teacher's architecture is read from its checkpoint (config.init_from); the student is
configs/lm_shakespeare.py's model with half the layers (cpu: 2 x 128 instead of 4 x 128).
Presets: tiny | cpu | gpu | gpt2 | gpt2_124m, lm_shakespeare's with the student's depth
(STUDENT); `tiny` (tests) has no teacher run: its teacher is a freshly initialised tiny LM
(distill.random_teacher) and the student has 1 layer.
Ablations: --config.distill.divergence=forward|reverse|jsd, .beta, .temperature, .alpha;
on-policy rows (GKD): --config.distill.on_policy=0.5 (.on_policy_tokens, .on_policy_temperature).
"""
from configs import lm_shakespeare
from genjax import config_lib

STUDENT = {"tiny": {"model.num_layers": 1, "distill.random_teacher": True,
                    "distill.on_policy_tokens": 8},
           "cpu": {"model.num_layers": 2}, "gpu": {"model.num_layers": 3},
           "gpt2_124m": {"model.num_layers": 6}, "gpt2": {"model.num_layers": 6}}
PRESETS = STUDENT


def get_config(arg: str | None = None):
    c = lm_shakespeare.get_config(arg)  # its preset (shapes, steps); the teacher's model keys
    c.unlock()
    c.family = "distill"
    c.distill = config_lib.ConfigDict()
    c.distill.divergence = "forward"   # forward KL(T||S) | reverse KL(S||T) | jsd (GKD)
    c.distill.beta = 0.5               # jsd: mixture weight of the teacher (0: forward, 1: reverse)
    c.distill.temperature = 2.0        # tau: both distributions softened; the KL term is x tau^2
    c.distill.alpha = 0.5              # weight of the KL term; 1 - alpha on the next-token CE
    c.distill.random_teacher = False   # no init_from: a freshly initialised teacher (tests only)
    # On-policy rows (GKD lambda): the first round(on_policy x batch_size) rows of each batch
    # keep a prompt of max_len - N tokens and continue with N = on_policy_tokens tokens the
    # student samples in the step (temperature on_policy_temperature); D on those, no CE.
    c.distill.on_policy = 0.0          # fraction in [0, 1]; 0 = off (plain distillation)
    c.distill.on_policy_tokens = 32    # N in [1, max_len - 1]; the decode loop runs N steps
    c.distill.on_policy_temperature = 1.0  # sampling temperature (0 = greedy; tau is separate)
    c.distill.valid_vocab = 0          # ids the tokenizer has (resolve_config); never drawn above
    # The teacher's model keys (filled from its checkpoint when init_from is set).
    c.distill.teacher_model = config_lib.ConfigDict(config_lib.to_dict(c.model))
    config_lib.apply_preset(c, STUDENT, arg)
    c.lock()
    return c
