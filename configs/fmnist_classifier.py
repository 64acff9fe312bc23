r"""The Fashion-MNIST classifier (the image evaluators' feature net): presets tiny | cpu | gpu.

  python -m genjax.train --config=configs/fmnist_classifier.py:cpu --workdir=runs/clf_cpu

The recipe and its measured results are in genjax/families/classifier_recipe.py (inside
the package, so the evaluators find it by module name).
"""
from genjax.families.classifier_recipe import PRESETS, get_config  # noqa: F401
