r"""The toy family's config: a 3-component 2-D Gaussian mixture (tests/toy_family/gmm.py).

  python -m genjax.train --config=tests/toy_family/gmm_config.py --workdir=W
  python -m genjax.sample --workdir=W --num_samples=1000 --out=W/samples.npz
  python -m genjax.evaluate --workdir=W
"""
from genjax import config_lib
from genjax.evaluators import image_quality, likelihood, text


def get_config(arg: str | None = None):
    c = config_lib.base_config()
    c.family = "tests.toy_family.gmm"  # a module path: the family lives outside genjax
    c.total_steps = 300
    c.batch_size = 256
    c.log_every_steps = 10
    c.eval_every_steps = 100
    c.eval_batches = 4
    c.ckpt_every_steps = 100
    c.mesh.data = 1
    c.optim.lr = 0.05
    c.optim.warmup_steps = 10
    c.optim.weight_decay = 0.0
    c.optim.ema_decay = 0.0
    c.model.num_components = 3
    c.data.eval_points = 2000
    c.evals.likelihood = likelihood.settings(splits=("validation",))
    c.evals.text = text.settings()                    # not applicable: listed as skipped
    c.evals.image_quality = image_quality.settings()  # idem
    c.lock()
    return c
