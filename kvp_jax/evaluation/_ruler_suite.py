"""The "ruler" suite kind: RULER-style tasks, answered greedily through every
cell and scored as RULER scores them (share of the reference strings in
the answer, x100); with eval.metrics "fidelity", every compressed cell is
also teacher-forced on the full cache's greedy answer.

  {"kind": "ruler", "sources": [ruler or jsonl sources],
   "max_new_tokens": int | {task: int} (default: the task's)}
"""

from __future__ import annotations

from typing import Sequence

from kvp_jax import eviction as eviction_lib
from kvp_jax.evaluation import _suites
from kvp_jax.evaluation import _teacher_forced as tf
from kvp_jax.evaluation._grid import FIDELITY_METRICS
from kvp_jax.model import EOS_ID
from kvp_jax.samples import scoring


@_suites.register
class RulerSuite(_suites.SuiteKind):
  kind = "ruler"

  def run(self, run: _suites.SuiteRun,
          batch: Sequence[_suites.Item]) -> None:
    model, grid = run.model, run.grid
    max_new = max(i.max_new_tokens for i in batch)
    every = list(grid.evictions(run.suite))
    cells = run.pending(every, batch, ("accuracy",))
    fidelity = (run.pending([c for c in every if not c.cell.full], batch,
                            FIDELITY_METRICS) if grid.fidelity else [])
    if not cells and not fidelity:
      return
    prompts = [list(i.prompt) for i in batch]
    context = eviction_lib.prefill_context(
        model, prompts, capture=tf.needs_capture(cells + fidelity))
    importance = full_out = None
    for c in cells:
      if tf.needs_future([c]) and importance is None:
        if full_out is None:
          full_out, _ = eviction_lib.generate_compressed(
              model, None, grid.full_eviction(), context, max_new)
        importance = tf.oracle_importance(model, batch, full_out, max_new)
      # A chunked prefill evicts as it reads, so it starts from the prompts.
      source = prompts if c.eviction.evicts_while_prefilling else context
      out, stats = eviction_lib.generate_compressed(
          model, c.scorer, c.eviction, source, max_new,
          importance=importance, rng=c.cell.rng(run.rng))
      if c.cell.full:
        full_out = out
      rows = []
      for item, ids in zip(batch, out):
        text = model.tokenizer.decode(ids[:item.max_new_tokens])
        rows.append(c.cell.row(
            item, "accuracy", 100 * scoring.score_sample(item.sample, text),
            prediction=text[:200],
            cache_bytes=stats["cache_bytes"] / len(batch),
            peak_slots=stats["peak_slots"]))
      run.log.add(rows)
    if not fidelity:
      return
    if full_out is None:            # The full cell was logged before.
      full_out, _ = eviction_lib.generate_compressed(
          model, None, grid.full_eviction(), context, max_new)
    if importance is None and tf.needs_future(fidelity):
      importance = tf.oracle_importance(model, batch, full_out, max_new)
    conts = [list(ids[:item.max_new_tokens]) or [EOS_ID]
             for item, ids in zip(batch, full_out)]
    tf.log_fidelity(run, batch, fidelity, context, prompts, conts,
                    importance)
