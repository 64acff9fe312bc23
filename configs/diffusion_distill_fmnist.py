r"""Progressive distillation of the Fashion-MNIST diffusion sampler: N -> N/2 DDIM steps a
round (genjax/families/diffusion_distill.py).

  python -m genjax.train --config=configs/diffusion_distill_fmnist.py:cpu \
      --workdir=runs/dm_32 --config.init_from=runs/dm --config.distill.steps=64

The teacher's model keys come from its checkpoint; the student predicts v and starts as a
copy of the teacher's weights (an eps teacher's outputs read as v: README's ablation). Presets: diffusion_fmnist's; `tiny` (tests) has no teacher run: the
teacher is the student's own random init (distill.random_teacher), 4 -> 2 steps.
Guidance first (`--config.distill.stage=guidance`, from a diffusion run with label
dropout), then progressive rounds from that run, sampled with one pass a step:

  python -m genjax.train --config=configs/diffusion_distill_fmnist.py:cpu \
      --workdir=runs/dm_w --config.init_from=runs/dm --config.distill.stage=guidance
  python -m genjax.sample --workdir=runs/dm_w --guidance=2 --steps=64
"""
from configs import diffusion_fmnist
from genjax import config_lib

ROUND = {"tiny": {"distill.random_teacher": True, "distill.steps": 4},
         "cpu": {"total_steps": 400, "optim.lr": 2e-4, "optim.warmup_steps": 0}}


def get_config(arg: str | None = None):
    c = diffusion_fmnist.get_config(arg)
    c.unlock()
    c.family = "diffusion_distill"
    c.model.parameterization = "v"     # the student's; the teacher's is read from its run
    c.model.guidance_input = False     # the net takes g (filled: True after stage guidance)
    c.sample.guidance = 1.0            # g for a student that takes it (1 = conditional)
    c.distill = config_lib.ConfigDict()
    c.distill.stage = "progressive"    # progressive (N -> N/2 steps) | guidance (Meng et
    #                                    al. 2023 stage 1: one pass learns the guided teacher)
    c.distill.steps = 64               # N: the teacher's DDIM steps this round; student N/2
    #                                    (stage guidance: the student's default sampling steps)
    c.distill.guidance_min = 1.0       # g ~ U[min, max] per example, genjax's guidance
    c.distill.guidance_max = 5.0       #   (1 conditional, g = 1 + w of Meng et al.: w in [0, 4])
    c.distill.teacher_parameterization = ""  # "" = the student's (filled from init_from)
    c.distill.random_teacher = False   # no init_from: the teacher is the random init (tests)
    config_lib.apply_preset(c, ROUND, arg) if (arg or "cpu") in ROUND else None
    c.lock()
    return c
