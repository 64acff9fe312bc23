"""genjax: generative models in JAX -- one train step, one checkpoint layer, four families."""
__version__ = "0.1.0"
