"""What the generation and perplexity suites share: the future importance
of a batch's prompt tokens, and teacher-forced fidelity to the full cache.

Fidelity of a compressed cell on continuations `conts` (the full cache's
greedy answers, or references): agreement (% top-1 agreement with the full
cache's token), kl (mean KL(full || compressed), nats) and fidelity_ll
(mean log-likelihood per token of conts under the compressed cache), from
one forward pass over conts (kvp_jax.evaluation._fidelity).
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from kvp_jax import eviction as eviction_lib
from kvp_jax import traces as traces_lib
from kvp_jax.evaluation import _fidelity as fidelity_lib
from kvp_jax.evaluation._grid import Cell, Evaluated
from kvp_jax.evaluation._suites import Item, SuiteRun


def oracle_importance(model, items: Sequence[Item], continuations,
                      max_new: int) -> np.ndarray:
  """[B, L, K, P] future importance by position of each prompt token, for
  the given continuations (the full-cache answer, or the reference)."""
  recorded = traces_lib.record_traces(
      model, [list(i.prompt) for i in items], None, max_new_tokens=max_new,
      with_kv=False, continuations=continuations)
  width = max(t.length for t in recorded)
  c = model.config
  out = np.zeros((len(items), c.num_layers, c.num_kv_heads, width),
                 np.float32)
  for i, t in enumerate(recorded):
    out[i, :, :, :t.length] = t.importance[:, :, 0]
  return out


def needs_future(cells: Sequence[Evaluated]) -> bool:
  return any(c.scorer is not None and c.scorer.needs_future for c in cells)


def needs_capture(cells: Sequence[Evaluated]) -> bool:
  """Some compressed cell's scorer reads the prefill's attention."""
  return any(c.scorer is not None and c.scorer.needs_prefill_attention
             for c in cells if not c.cell.full)


def perplexity_row(cell: Cell, item: Item, nll: float, tokens: int,
                   cache_bytes: float, value: float | None = None) -> dict:
  """One sample's perplexity row: nll is the summed negative log-likelihood
  of its `tokens` reference tokens; value exp(nll / tokens) unless given."""
  value = float(np.exp(nll / tokens)) if value is None else value
  return cell.row(item, "perplexity", value, nll=nll, tokens=tokens,
                  cache_bytes=cache_bytes)


def log_fidelity(run: SuiteRun, batch: Sequence[Item],
                 cells: Sequence[Evaluated], context, prompts, conts,
                 importance, perplexity: bool = False) -> None:
  """Logs the fidelity of every cell to the full cache on `conts`.

  perplexity=True (conts are the references of a perplexity suite, not the
  full cache's tokens): agreement is with the full cache's argmax at each
  position, and the same pass also logs each cell's perplexity row where it
  is missing, so no second teacher-forced pass over the references is
  needed.
  """
  model, grid = run.model, run.grid
  full, _ = eviction_lib.continuation_logits(
      model, None, grid.full_eviction(), context, conts)      # [B, W, V]
  width = full.shape[1]
  tokens = np.zeros((len(conts), width), np.int32)
  mask = np.zeros((len(conts), width), bool)
  for i, c in enumerate(conts):
    tokens[i, :len(c)], mask[i, :len(c)] = c, True
  for c in cells:
    source = prompts if c.eviction.evicts_while_prefilling else context
    logits, stats = eviction_lib.continuation_logits(
        model, c.scorer, c.eviction, source, conts, importance=importance,
        rng=c.cell.rng(run.rng))
    m = {k: np.asarray(v) for k, v in fidelity_lib.fidelity_metrics(
        full, logits, jnp.asarray(tokens), jnp.asarray(mask),
        agree_with="full_argmax" if perplexity else "tokens").items()}
    del logits
    cache_bytes = stats["cache_bytes"] / len(batch)
    if perplexity:
      run.log.add(perplexity_row(c.cell, item, -float(m["log_likelihood"][i]),
                                 int(m["tokens"][i]), cache_bytes)
                  for i, item in enumerate(batch))
    run.log.add(
        c.cell.row(item, metric, float(value), tokens=int(m["tokens"][i]),
                   cache_bytes=cache_bytes)
        for i, item in enumerate(batch)
        for metric, value in (
            ("agreement", m["top1_agreement"][i]), ("kl", m["kl"][i]),
            ("fidelity_ll", m["log_likelihood"][i] /
             max(int(m["tokens"][i]), 1))))
