r"""Progressive distillation of the Fashion-MNIST diffusion sampler: N -> N/2 DDIM steps a
round (genjax/families/diffusion_distill.py).

  python -m genjax.train --config=configs/diffusion_distill_fmnist.py:cpu \
      --workdir=runs/dm_32 --config.init_from=runs/dm --config.distill.steps=64

The teacher's model keys come from its checkpoint; the student predicts v and starts as a
copy of the teacher. Presets: diffusion_fmnist's; `tiny` (tests) has no teacher run: the
teacher is the student's own random init (distill.random_teacher), 4 -> 2 steps.
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
    c.model.label_dropout = 0.0        # the teacher is distilled on the true labels
    c.sample.guidance = 1.0            # (guidance distillation is not built)
    c.distill = config_lib.ConfigDict()
    c.distill.steps = 64               # N: the teacher's DDIM steps this round; student N/2
    c.distill.teacher_parameterization = ""  # "" = the student's (filled from init_from)
    c.distill.random_teacher = False   # no init_from: the teacher is the random init (tests)
    config_lib.apply_preset(c, ROUND, arg) if (arg or "cpu") in ROUND else None
    c.lock()
    return c
