"""The "ruler" suite kind: RULER-style tasks, answered greedily through every
cell and scored as RULER scores them (share of the reference strings in
the answer, x100); with eval.metrics "fidelity", every compressed cell is
also teacher-forced on the full cache's greedy answer.

  {"kind": "ruler", "sources": [ruler or jsonl sources],
   "max_new_tokens": int | {task: int} (default: the task's),
   "answers": "all" | "where_full_right"}

answers: which samples the compressed cells answer. "all" (the default)
generates every cell's answer to every sample. "where_full_right" generates
them only where the full cache's answer is right (RULER score 100): the
samples answer retention reads (kvp_jax.evaluation._verdicts), which are
the only ones it changes; the compressed cells' accuracy rows then cover
those samples alone, and fidelity (teacher-forced, every sample) carries
the rest. Greedy answers dominate a grid's cost, and a full cache that
answers few samples right makes the rest of that cost buy nothing.
"""

from __future__ import annotations

from typing import Sequence

from kvp_jax import eviction as eviction_lib
from kvp_jax.evaluation import _suites
from kvp_jax.evaluation import _teacher_forced as tf
from kvp_jax.evaluation._grid import FIDELITY_METRICS
from kvp_jax.model import EOS_ID
from kvp_jax.samples import scoring

ANSWERS = ("all", "where_full_right")
RIGHT = 100.0 - 1e-6        # RULER's score of a fully right answer.


def check_answers(value: str, where: str) -> None:
  if value not in ANSWERS:
    raise ValueError(f"{where}: {value!r} is not one of {ANSWERS}")


@_suites.register
class RulerSuite(_suites.SuiteKind):
  kind = "ruler"

  def run(self, run: _suites.SuiteRun,
          batch: Sequence[_suites.Item]) -> None:
    model, grid = run.model, run.grid
    max_new = max(i.max_new_tokens for i in batch)
    every = list(grid.evictions(run.suite))
    fidelity = (run.pending([c for c in every if not c.cell.full], batch,
                            FIDELITY_METRICS) if grid.fidelity else [])
    only_right = run.settings.get("answers", "all") == "where_full_right"
    answering, right = batch, None
    if only_right:
      right = _logged_right(run, every, batch)
      answering = batch if right is None else right
    cells = run.pending(every, answering, ("accuracy",))
    if not cells and not fidelity:
      return
    prompts = [list(i.prompt) for i in batch]
    context = eviction_lib.prefill_context(
        model, prompts, capture=tf.needs_capture(cells + fidelity))
    full_out = importance = None
    if only_right and cells:
      full = [c for c in every if c.cell.full]
      full_out, _ = _answer(run, batch, full, prompts, context, max_new)
      # The logged verdicts where there are some: the samples a rerun
      # answers are those the first run found right.
      keep = ([k for k, (item, ids) in enumerate(zip(batch, full_out))
               if _score(model, item, ids) >= RIGHT] if right is None else
              [k for k, item in enumerate(batch) if item in right])
      answering = [batch[k] for k in keep]
      cells = run.pending([c for c in every if not c.cell.full], answering,
                          ("accuracy",))
      if cells:
        sub = [prompts[k] for k in keep]
        _answer(run, answering, cells, sub,
                eviction_lib.prefill_context(
                    model, sub, capture=tf.needs_capture(cells)), max_new,
                full_out=[full_out[k] for k in keep])
    elif cells:
      full_out, importance = _answer(run, batch, cells, prompts, context,
                                     max_new)
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


def _answer_text(model, item: _suites.Item, ids) -> str:
  return model.tokenizer.decode(ids[:item.max_new_tokens])


def _score(model, item: _suites.Item, ids) -> float:
  return 100 * scoring.score_sample(item.sample,
                                    _answer_text(model, item, ids))


def _answer(run: _suites.SuiteRun, batch, cells, prompts, context, max_new,
            full_out=None):
  """Generates and logs every cell's answers to the batch. Returns the full
  cache's answers (given, generated for a cell that needs them, or those
  of the full cell among `cells`; None if none of these) and the batch's
  future importance (None unless a cell needed it)."""
  model, grid = run.model, run.grid
  importance = None
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
    texts = [_answer_text(model, item, ids) for item, ids in zip(batch, out)]
    run.log.add(c.cell.row(
        item, "accuracy", 100 * scoring.score_sample(item.sample, text),
        prediction=text[:200], cache_bytes=stats["cache_bytes"] / len(batch),
        peak_slots=stats["peak_slots"]) for item, text in zip(batch, texts))
  return full_out, importance


def _logged_right(run: _suites.SuiteRun, every, batch):
  """The batch's items whose logged full-cache answer is right, or None
  where some full-cache answer is not in this process's log."""
  full = [c for c in every if c.cell.full]
  if not full:
    raise ValueError(f"suite {run.suite}: answers 'where_full_right' needs "
                     "the full cache in the grid (eval.include_full)")
  values = [run.log.value(full[0].cell, i.sample.id, "accuracy")
            for i in batch]
  if any(v is None for v in values):
    return None
  return [i for i, v in zip(batch, values) if v >= RIGHT]
