r"""Ablation table "LM: normalisation x position encoding" (Shakespeare char LM).

Produces one table: validation loss (nats/char) and bits per character, final and best,
mean +- std over seeds, for {LayerNorm, RMSNorm} x {learned, rotary} positions, every
other setting as configs/lm_shakespeare.py:cpu.

  python -m experiments.sweep --config=configs/ablations/lm_norm_pos.py:cpu --sweep=norm_pos \
      --root=runs/ablations --seeds=3 --parallel=2
  python -m experiments.collect runs/ablations --metrics=loss,bits_per_char

`:arg` is the base preset of configs/lm_shakespeare.py (tiny for a smoke test, cpu, gpu).
"""
from configs import lm_shakespeare


def get_config(arg: str | None = None):
    return lm_shakespeare.get_config(arg or "cpu")


def get_sweep(add, arg):
    """norm_pos: the table's 2 x 2 grid."""
    from genjax import sweep_lib as s
    if arg != "norm_pos":
        raise ValueError(f"unknown sweep {arg!r}: choose norm_pos")
    add(s.product(s.sweep("model.norm", ["layernorm", "rmsnorm"]),
                  s.sweep("model.pos", ["learned", "rotary"])))
