r"""GPT-style character LM on the complete Shakespeare plays (held-out plays for eval).

  python -m genjax.train --config=configs/lm_shakespeare.py:cpu --workdir=runs/lm_cpu
  python -m genjax.sample --workdir=runs/lm_cpu --prompt="ROMEO:" --num_samples=3

Presets (`:arg`):
  tiny       tests: seconds on one CPU core.
  cpu        the main job (`make run`): 4 x 128, context 64, batch 12, 2000 steps: ~2
             minutes of training on 2 CPU cores, 1.74 nats/char on the held-out plays.
  gpu        nanoGPT's shakespeare-char shape: 6 layers x 384, context 256.
  gpt2_124m  GPT-2 small shape (12 x 768, context 1024, vocab 50304), for throughput.
  gpt2       OpenAI's GPT-2 small exactly (vocab 50257, biases, LayerNorm eps 1e-5, tanh
             GELU, tied head), the shape `python -m genjax.interop import-gpt2` writes:
               python -m genjax.interop import-gpt2 --from=DIR --workdir=W
             DIR: a Hugging Face GPT-2 folder (config.json, model.safetensors, tokenizer.json
             or vocab.json + merges.txt), e.g. a local copy of the `gpt2` model repo.
  gpt2_1b    GPT-3 XL depth/width (24 x 2048, 1.3B params), context 1024.
  llama_1b, llama_7b  LLaMA-style (RMSNorm, rotary, SwiGLU, no bias), context 2048:
             LLaMA-3.2-1B's shape (8 key/value heads, tied embeddings); LLaMA-2-7B's.
Scale knobs (README "Scale"): --config.model.remat=full, --config.model.scan_layers=True,
--config.model.attention_impl=chunked|cudnn, --config.model.loss_chunk=256.
Own text: --config.data.name=text --config.data.text_file=PATH (90/10 split by position).
BPE: --config.data.tokenizer=bpe [--config.data.vocab_size=512] (bits/char stay comparable).
Sweeps: lr, norm, lr_x_dropout (`python -m experiments.sweep --config=...:cpu --sweep=lr`).
"""
from genjax import config_lib
from genjax.evaluators import likelihood, text

# LLaMA's RMSNorm eps (1e-5, both models) and rotary base 10000 (LLaMA-2's; LLaMA-3's is
# 500000 with its own frequency scaling, not implemented: llama_1b is LLaMA-3.2-1B's shape).
_LLAMA = {"model.norm": "rmsnorm", "model.pos": "rotary", "model.activation": "swiglu",
          "model.norm_eps": 1e-5,
          "model.tie_embeddings": False, "model.use_bias": False, "model.max_len": 2048,
          "batch_size": 8, "total_steps": 1000, "optim.lr": 3e-4, "optim.warmup_steps": 100,
          "compute_dtype": "bfloat16", "eval_every_steps": 0, "ckpt_every_steps": 1000}

PRESETS = {
    "tiny": {"model.size": "tiny", "model.max_len": 32, "batch_size": 8, "total_steps": 20,
             "log_every_steps": 5, "eval_every_steps": 10, "eval_batches": 2,
             "final_eval_batches": 8,
             "ckpt_every_steps": 10, "optim.warmup_steps": 5, "sample.max_new_tokens": 40,
             "sample.num_samples": 2, "evals.likelihood.max_batches": 2,
             "evals.text.num_samples": 2, "evals.text.max_new_tokens": 31,
             "evals.text.span_chars": 20},  # one decode window: 2 compiles, not 5
    # The main job. At a fixed budget of ~1.5M training tokens (~2 minutes here), many short
    # windows beat few long ones: a character model needs little context for spelling and
    # words, and 2000 updates of 12 x 64 learn more than 750 of 16 x 128 (same tokens).
    # Sweep `cpu_budget` (experiments/2026-12-01_lm_cpu_preset/) measures it, and the lr:
    # 1e-3 1.886, 2e-3 1.787, 4e-3 1.737, 8e-3 1.739 nats/char (4e-3: mid-plateau).
    # Attention "chunked" (one 64-query block here): its hand-written backward (rowsum of
    # dO * O instead of the softmax Jacobian over [T, T]) makes the step ~7% faster on
    # XLA:CPU, same math (experiments/bench/lm_throughput.py, README "CPU training throughput").
    "cpu": {"model.size": "cpu", "model.max_len": 64, "batch_size": 12, "total_steps": 2000,
            "model.attention_impl": "chunked",
            "optim.lr": 4e-3, "optim.warmup_steps": 50, "log_every_steps": 250,
            "eval_every_steps": 1000, "eval_batches": 10, "ckpt_every_steps": 1000},
    "gpu": {"model.size": "gpu", "model.max_len": 256, "batch_size": 64, "total_steps": 5000,
            "optim.lr": 1e-3, "optim.warmup_steps": 100, "model.dropout": 0.2,
            "compute_dtype": "bfloat16", "optim.b2": 0.99, "eval_every_steps": 500,
            "ckpt_every_steps": 1000},
    "gpt2_124m": {"model.size": "gpt2_124m", "model.max_len": 1024, "model.vocab_size": 50304,
                  "batch_size": 12, "total_steps": 1000, "optim.lr": 6e-4,
                  "compute_dtype": "bfloat16", "optim.warmup_steps": 100,
                  "eval_every_steps": 0, "ckpt_every_steps": 1000},
    "gpt2": {"model.size": "gpt2_124m", "model.max_len": 1024, "model.vocab_size": 50257,
             "model.use_bias": True, "model.norm_eps": 1e-5, "model.activation": "gelu",
             "model.tie_embeddings": True, "model.vocab_multiple": 1,
             "data.tokenizer": "bpe", "data.vocab_size": 50257, "batch_size": 8,
             "total_steps": 1000, "optim.lr": 1e-4, "optim.warmup_steps": 100,
             "eval_every_steps": 0, "ckpt_every_steps": 1000, "sample.prompt": "Hello,",
             "sample.max_new_tokens": 40},
    # GPT-3 XL depth/width (SIZES["gpt2_1b"], 1.3B params), for the fit table and throughput.
    "gpt2_1b": {"model.size": "gpt2_1b", "model.max_len": 1024, "model.vocab_size": 50304,
                "batch_size": 8, "total_steps": 1000, "optim.lr": 2e-4,
                "compute_dtype": "bfloat16", "optim.warmup_steps": 100,
                "eval_every_steps": 0, "ckpt_every_steps": 1000},
    # LLaMA-style: RMSNorm, rotary, SwiGLU, no biases (Touvron et al. 2023), the head untied
    # but for the 1B, at 2048 tokens; vocab: LLaMA-3's 128256 (1B), LLaMA-2's 32000 (7B).
    "llama_1b": {**_LLAMA, "model.size": "llama_1b", "model.vocab_size": 128256,
                 "model.tie_embeddings": True},  # LLaMA-3.2-1B's shape: 1,235,814,400 params
    "llama_7b": {**_LLAMA, "model.size": "llama_7b", "model.vocab_size": 32000},
}


def get_config(arg: str | None = None):
    c = config_lib.base_config()
    c.family = "lm"
    c.optim.weight_decay = 0.1
    c.optim.wd_exclude = ("pos_embed",)

    c.model.name = "transformer"
    c.model.size = "cpu"           # row of genjax.models.transformer.SIZES (shape keys below)
    c.model.num_layers = 0         # 0 = from `size` (any shape key set here wins)
    c.model.num_heads = 0
    c.model.num_kv_heads = 0       # grouped-query attention: key/value heads (0 = num_heads)
    c.model.embed_dim = 0
    c.model.mlp_ratio = 0
    c.model.mlp_dim = 0            # MLP hidden width; 0 = from `size` (else mlp_ratio * embed_dim)
    c.model.max_len = 128          # context length = training window
    c.model.vocab_size = 0         # 0 = the tokenizer's vocab, rounded up to vocab_multiple
    c.model.vocab_multiple = 64
    c.model.norm = "layernorm"     # layernorm | rmsnorm
    c.model.pos = "learned"        # learned | rotary
    c.model.activation = "gelu"    # gelu (tanh approximation, GPT-2) | gelu_exact (erf) | swiglu
    c.model.tie_embeddings = True
    c.model.dropout = 0.0
    c.model.use_bias = False
    c.model.norm_eps = 1e-6        # LayerNorm/RMSNorm epsilon (flax's default; GPT-2 uses 1e-5)
    c.model.attention_impl = ""    # "" (JAX picks) | xla | cudnn | chunked (query blocks, XLA)
    c.model.attention_chunk = 512  # query block of attention_impl=chunked
    c.model.loss_chunk = 0         # >0: cross-entropy in chunks of this many positions
    c.model.remat = "none"         # none | full | dots_saveable | dots_with_no_batch_dims_saveable
    c.model.scan_layers = False    # layers under nn.scan (params [L, ...]; compile flat in depth)
    c.model.z_loss = 0.0           # weight of the log-partition^2 penalty (PaLM)

    c.data.name = "shakespeare"    # shakespeare | text
    c.data.text_file = ""          # any UTF-8 file (with name=text)
    c.data.data_dir = ""           # "" = $GENJAX_DATA_DIR or ~/.cache/genjax/tfds
    c.data.tokenizer = "char"      # char | bpe (byte-level, trained on the train split)
    c.data.vocab_size = 512        # BPE vocab size (tokenizer="bpe"); 256 bytes + merges
    c.data.tokenizer_from = ""     # a run whose tokenizer to use ("" = init_from's, else the data's)
    c.data.unknown_char = ""       # char tokenizer of another run: characters it lacks become
                                   # this one ("" = an error listing them)
    # Cleaning (genjax/data/cleaning.py) after the source's own stages; a change is a new
    # dataset. Map stages run on every split; filters on train only (held-out text as is).
    c.data.cleaning = ("nfc,strip_markup,whitespace,filter_lines,exact_dedup,near_dedup,"
                       "length_filter,decontaminate,tidy")  # "none" = no stage
    c.data.drop_lines = (r"^\s*\[[^\]]*\]\s*$",)  # filter_lines: regexes of lines to drop
    c.data.keep_lines = r"^[A-Z][A-Z0-9 ,.'&-]*:$"  # never filtered: speaker lines "ROMEO:"
    c.data.dedup_min_chars = 30    # shorter lines are never deduplicated ("Exeunt", "Ay.")
    c.data.near_dup_threshold = 0.8  # near_dedup: Jaccard of character 5-shingles
    c.data.min_chars = 1           # length_filter: non-blank lines shorter than this go
    c.data.max_chars = 5000        # length_filter: longer lines go
    c.data.max_non_alpha = 0.5     # length_filter: max fraction of non-letters ("...")
    c.data.decontam_ngram = 13     # decontaminate: word n-grams shared with validation/test

    c.sample.prompt = "ROMEO:"
    c.sample.num_samples = 3
    c.sample.max_new_tokens = 300
    c.sample.temperature = 0.8
    c.sample.top_k = 40
    c.sample.top_p = 0.95
    c.sample.min_p = 0.0           # keep tokens with prob >= min_p * top prob (0 = off)
    c.sample.repetition_penalty = 1.0  # > 1 discourages tokens already seen (CTRL)
    c.sample.stop = ()             # stop strings (output cut before the first one)
    # Past the context, slide the window (re-read the last half of it; a note is printed).
    # False: a request longer than the context is an error naming the numbers.
    c.sample.window = True

    # python -m genjax.evaluate (keys commented in each evaluator's settings()):
    c.evals.likelihood = likelihood.settings()  # validation/test loss, perplexity, bits/char, per play
    c.evals.text = text.settings()  # samples: distinct-n, repetition, memorised 50-char spans

    config_lib.apply_preset(c, PRESETS, arg)
    c.lock()
    return c


def get_sweep(add, arg):
    """lr: peak learning rate; norm: LayerNorm vs RMSNorm; lr_x_dropout: their product;
    cpu_budget: context x batch x steps x lr of the `cpu` preset at about its wall time
    (experiments/2026-12-01_lm_cpu_preset/)."""
    from genjax import sweep_lib as s
    lrs = s.sweep("optim.lr", [3e-4, 1e-3, 3e-3, 1e-2])
    if arg == "cpu_budget":
        # ~1.5M training tokens each: context x batch x steps at equal tokens, then lr.
        shapes = s.zipit(s.sweep("model.max_len", [128, 64, 64, 32]),
                         s.sweep("batch_size", [16, 12, 24, 24]),
                         s.sweep("total_steps", [750, 2000, 1000, 2000]))
        add(s.product(shapes, s.sweep("optim.lr", [2e-3])))
        add(s.product(s.zipit(s.sweep("model.max_len", [64]), s.sweep("batch_size", [12]),
                              s.sweep("total_steps", [2000])),
                      s.sweep("optim.lr", [1e-3, 4e-3, 8e-3])))
    elif arg == "lr":
        add(lrs)
    elif arg == "norm":
        add(s.sweep("model.norm", ["layernorm", "rmsnorm"]))
    elif arg == "lr_x_dropout":
        add(s.product(lrs, s.sweep("model.dropout", [0.0, 0.1, 0.2])))
    else:
        raise ValueError(f"unknown sweep {arg!r}: choose lr, norm, lr_x_dropout or cpu_budget")
