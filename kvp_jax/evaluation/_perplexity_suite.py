"""The "perplexity" suite kind: the perplexity of reference continuations
given a context (dialogues, documents, a user's JSONL or text files),
teacher-forced through every cell; with eval.metrics "fidelity", the same
pass gives each compressed cell's agreement with the full cache's argmax,
its KL and its log-likelihood.

  {"kind": "perplexity", "sources": [...], "text_files": [paths],
   "context_tokens": n, "continuation_tokens": m}
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from kvp_jax import eviction as eviction_lib
from kvp_jax.evaluation import _suites
from kvp_jax.evaluation import _teacher_forced as tf
from kvp_jax.evaluation._grid import Evaluated
from kvp_jax.evaluation._grid import FIDELITY_METRICS


@_suites.register
class PerplexitySuite(_suites.SuiteKind):
  kind = "perplexity"

  def samples(self, suite: Mapping[str, Any], samples: list, tokenizer):
    if suite.get("text_files"):
      samples = samples + _suites.text_file_samples(
          list(suite["text_files"]), tokenizer,
          int(suite.get("context_tokens", 1024)),
          int(suite.get("continuation_tokens", 256)))
    return samples

  def item(self, suite, sample, prompt, tokenizer) -> _suites.Item:
    if not sample.continuation:
      raise ValueError(f"sample {sample.id!r} has no continuation to score")
    cont = tuple(tokenizer.encode(sample.continuation))
    return _suites.Item(sample, _suites.group_of(sample), tuple(prompt), cont,
                        len(cont))

  def run(self, run: _suites.SuiteRun,
          batch: Sequence[_suites.Item]) -> None:
    score_cells(run, batch, list(run.grid.evictions(run.suite)))


def score_cells(run: _suites.SuiteRun, batch: Sequence[_suites.Item],
                every: Sequence[Evaluated]) -> None:
  """Perplexity (and, when asked, fidelity) rows of the pending `every`
  cells on a batch of items with continuations."""
  model, grid = run.model, run.grid
  cells = run.pending(every, batch, ("perplexity",))
  fidelity = (run.pending([c for c in every if not c.cell.full], batch,
                          FIDELITY_METRICS) if grid.fidelity else [])
  if not cells and not fidelity:
    return
  prompts = [list(i.prompt) for i in batch]
  conts = [list(i.continuation) for i in batch]
  width = max(map(len, conts))
  # A chunked prefill evicts as it reads: it needs no full prefill unless
  # the full cache or fidelity (which compares with it) is pending.
  chunked = all(c.eviction.evicts_while_prefilling
                for c in cells if not c.cell.full)
  context = None if chunked and not fidelity and not any(
      c.cell.full for c in cells) else eviction_lib.prefill_context(
          model, prompts, capture=tf.needs_capture(cells + fidelity))
  importance = None
  with_fidelity = {c.cell for c in fidelity}
  # A cell with fidelity pending gets its perplexity from that pass.
  for c in [c for c in cells if c.cell not in with_fidelity]:
    if tf.needs_future([c]) and importance is None:
      importance = tf.oracle_importance(model, batch, conts, width)
    source = (prompts if context is None or c.eviction.evicts_while_prefilling
              else context)
    ll, stats = eviction_lib.continuation_log_likelihood(
        model, c.scorer, c.eviction, source, conts, importance=importance,
        rng=c.cell.rng(run.rng))
    run.log.add(tf.perplexity_row(c.cell, item, float(-np.sum(x)), len(x),
                                  stats["cache_bytes"] / len(batch),
                                  value=float(np.exp(-np.mean(x))))
                for item, x in zip(batch, ll))
  if fidelity:
    if importance is None and tf.needs_future(fidelity):
      importance = tf.oracle_importance(model, batch, conts, width)
    tf.log_fidelity(run, batch, fidelity, context, prompts, conts,
                    importance, perplexity=True)
