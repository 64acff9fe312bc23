"""The family's own likelihood over whole splits: its eval_fn, summed and finalized
exactly as genjax.train's eval does (genjax/eval_sums.py, through `ctx.evaluate`).
Applies to families that name their likelihood metrics (capability `likelihood_metrics`);
for example:

  lm         loss (nats/token), perplexity = exp(loss), bits_per_token = loss / ln 2,
             bits_per_char = bits_per_token / (characters per token of the split), exact
             for the char tokenizer (1 char/token); for BPE the split's own character
             and token counts give the ratio (see `details.chars_per_token`).
             Per document (play) as well: each play alone, windows from its start, so
             per-play sums differ from the split's by the few targets whose context
             crosses a play boundary.
  diffusion  vlb_bpd: the variational bound in bits/dim (an upper bound on the NLL), its
             prior and decoder terms, and the simple loss (genjax/families/diffusion.py).
  vae        elbo and nll_iwae in nats/image, elbo_bpd and nll_bpd in bits/dim.
Metrics are named <split>/<key>; there is no real-vs-real floor for a likelihood.
"""
from __future__ import annotations

from ml_collections import ConfigDict

from genjax import eval_sums

NEEDS = ("likelihood_metrics",)
COUNTS = ("count", "tokens")  # reported in details, not as metrics


def settings(**overrides) -> ConfigDict:
    """config.evals.likelihood: the keys and their defaults (unknown overrides fail)."""
    s = ConfigDict()
    s.during_training = False      # True: also at each periodic eval (whole splits: slow)
    s.splits = ("validation", "test")  # the ones the data has; others are skipped (details)
    s.batch_size = 0               # global eval batch; 0 = config.batch_size
    s.max_batches = 0              # per split (and per document); 0 = all of it
    s.per_document = True          # text data with documents (plays): one row per document
    from genjax.evaluators import with_overrides
    return with_overrides("likelihood", s, overrides)


def _document_rows(ctx, split: str, batch_size: int, max_batches) -> list[dict]:
    """One row per document of a split (data offering `document_eval_batches`):
    {"document", "chars", **metrics}."""
    return [{"document": name, "chars": chars, **ctx.evaluate(batches, kwargs)}
            for name, chars, batches, kwargs in
            ctx.data.document_eval_batches(split, batch_size, max_batches)]


def _table(rows: list[dict], first: str, headline: tuple) -> list[str]:
    keys = [k for k in headline if k in rows[0]] or [k for k in rows[0] if k != first]
    lines = [f"| {first} | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    lines += [f"| {r[first]} | " + " | ".join(f"{r[k]:.4g}" for k in keys) + " |" for r in rows]
    return lines


def evaluate(ctx, settings) -> dict:
    data, config = ctx.data, ctx.config
    have = list(getattr(data, "splits", []) or [])
    splits = [s for s in settings.splits if s in have]
    batch_size = int(settings.batch_size or config.batch_size)
    max_batches = int(settings.max_batches) or None
    metrics, details = {}, {"splits": {}, "documents": {}, "batch_size": batch_size,
                            "max_batches": max_batches,
                            "skipped_splits": [s for s in settings.splits if s not in have]}
    rows = []
    for split in splits:
        kwargs = eval_sums.eval_kwargs(data, split)
        m = ctx.evaluate(data.eval_batches(split, batch_size, max_batches), kwargs)
        details["splits"][split] = {**m, **kwargs}
        metrics.update({f"{split}/{k}": v for k, v in m.items() if k not in COUNTS})
        rows.append({"split": split, **m})
    md = [f"Whole splits{'' if max_batches is None else f' (first {max_batches} batches)'}, "
          f"{ctx.which} params, step {ctx.step}.", ""]
    headline = tuple(ctx.family.likelihood_metrics)
    md += _table(rows, "split", headline) if rows else ["(no split to evaluate)"]
    if settings.per_document and hasattr(data, "document_eval_batches"):
        for split in splits:
            doc_rows = _document_rows(ctx, split, batch_size, max_batches)
            if len(doc_rows) > 1:
                details["documents"][split] = doc_rows
                md += ["", f"Per document ({split}):", ""] + _table(doc_rows, "document",
                                                                     headline)
    tok = getattr(data, "tokenizer", None)
    if tok is not None and getattr(tok, "kind", "char") != "char":
        md += ["", f"bits_per_char: {tok.kind} tokenizer; nats/token are converted with each "
                   f"split's characters per token (details)."]
    return {"metrics": metrics, "floors": {}, "figures": [], "markdown": "\n".join(md),
            "details": details}
