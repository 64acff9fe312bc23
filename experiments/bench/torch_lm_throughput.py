r"""The PyTorch reference for `lm_throughput`: a plain PyTorch GPT of the `cpu` preset's
shape trained on the same random tokens, tokens/s apart from warm-up.

  python -m experiments.bench.torch_lm_throughput --out=torch_cpu.json            # eager
  python -m experiments.bench.torch_lm_throughput --compile --out=torch_cpu.json  # torch.compile
  python -m experiments.bench.torch_lm_throughput --profile --out=torch_cpu.json  # + matmul split

Needs torch (not a genjax dependency: run it from an environment that has it). The model
is the one genjax's `cpu` preset builds (pre-LayerNorm blocks without biases, learned
positions, tanh-GELU MLP 4x, tied embeddings; 812,160 parameters at vocab 128) written the
way a PyTorch user would: nn.Linear, F.scaled_dot_product_attention(is_causal=True),
torch.optim.AdamW with the preset's settings, float32, all CPU threads (2 here).
"""
from __future__ import annotations

import argparse
import platform
import sys
import time

from experiments.bench import report


def build(vocab: int, seq: int, layers: int, width: int, heads: int):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_attn = nn.LayerNorm(width, eps=1e-6, bias=False)
            self.qkv = nn.Linear(width, 3 * width, bias=False)
            self.out = nn.Linear(width, width, bias=False)
            self.ln_mlp = nn.LayerNorm(width, eps=1e-6, bias=False)
            self.up = nn.Linear(width, 4 * width, bias=False)
            self.down = nn.Linear(4 * width, width, bias=False)

        def forward(self, x):
            B, T, D = x.shape
            q, k, v = self.qkv(self.ln_attn(x)).split(D, dim=-1)
            q, k, v = (t.view(B, T, heads, D // heads).transpose(1, 2) for t in (q, k, v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.out(a.transpose(1, 2).reshape(B, T, D))
            return x + self.down(F.gelu(self.up(self.ln_mlp(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, width)
            self.pos = nn.Parameter(torch.zeros(seq, width))
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln_f = nn.LayerNorm(width, eps=1e-6, bias=False)
            for p in self.parameters():
                if p.dim() == 2:
                    nn.init.normal_(p, std=0.02)

        def forward(self, tokens):
            x = self.embed(tokens) + self.pos[: tokens.shape[1]]
            for b in self.blocks:
                x = b(x)
            return self.ln_f(x) @ self.embed.weight.T  # tied head

    return GPT()


def run(batch: int, seq: int, vocab: int, steps: int, warmup: int, compile_: bool,
        profile_: bool = False) -> dict:
    import numpy as np
    import torch
    from torch.nn import functional as F

    torch.manual_seed(0)
    model = build(vocab, seq, layers=4, width=128, heads=4)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and n != "pos"]
    rest = [p for n, p in model.named_parameters() if not (p.dim() == 2 and n != "pos")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=4e-3, betas=(0.9, 0.95), eps=1e-8)
    tokens = torch.from_numpy(np.random.default_rng(0).integers(
        0, vocab, (batch, seq + 1), dtype=np.int64))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def step():
        logits = model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    if compile_:
        step = torch.compile(step)
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    dt = (time.perf_counter() - t0) / steps
    return {"framework": "torch", "torch": torch.__version__, "compile": compile_,
            "threads": torch.get_num_threads(),
            "params": sum(p.numel() for p in model.parameters()),
            "batch_size": batch, "seq_len": seq, "step_ms": 1000 * dt,
            "tokens_per_s": batch * seq / dt, "warmup_s": warmup_s,
            "final_loss": float(loss.detach()), "python": platform.python_version(),
            **(matmul_split(step, steps) if profile_ else {})}


# The kernels that do the step's matmuls (eager CPU): linear layers (mm/addmm, forward and
# backward) and the fused attention's forward and backward.
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm",
              "aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::_scaled_dot_product_flash_attention_for_cpu_backward")


def matmul_split(step, steps: int) -> dict:
    """torch.profiler over `steps` steps: wall ms per step inside MATMUL_OPS (self time on
    the calling thread; their intra-op threads work inside it) and the step's wall ms."""
    from torch.profiler import ProfilerActivity, profile
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    wall = (time.perf_counter() - t0) / steps
    mm = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMUL_OPS)
    return {"profiled_step_ms": 1000 * wall, "matmul_ms": mm / steps / 1000}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch_size", type=int, default=12)
    p.add_argument("--seq_len", type=int, default=64)
    p.add_argument("--vocab_size", type=int, default=128)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="torch.compile the step")
    p.add_argument("--profile", action="store_true",
                   help="then profile as many steps: time in the matmul kernels")
    p.add_argument("--out", default="torch_lm_throughput.json")
    args = p.parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch_lm_throughput: torch is not installed here (it is not a genjax "
              "dependency); run it from an environment that has it", file=sys.stderr)
        return 2
    r = run(args.batch_size, args.seq_len, args.vocab_size, args.steps, args.warmup,
            args.compile, args.profile)
    rows = [("torch", f"{r['torch']}{' + compile' if r['compile'] else ''}"),
            ("params", f"{r['params']:,}"), ("batch x seq", f"{r['batch_size']} x {r['seq_len']}"),
            ("threads", r["threads"]), ("step", f"{r['step_ms']:.1f} ms"),
            ("tokens/s", f"{r['tokens_per_s']:,.0f}"), ("warm-up", f"{r['warmup_s']:.1f} s")]
    if "matmul_ms" in r:
        rows += [("profiled step", f"{r['profiled_step_ms']:.1f} ms"),
                 ("in matmul kernels", f"{r['matmul_ms']:.1f} ms"),
                 ("outside them", f"{r['profiled_step_ms'] - r['matmul_ms']:.1f} ms")]
    report.print_rows(rows)
    report.write_json(r, args.out)


if __name__ == "__main__":
    sys.exit(main())
