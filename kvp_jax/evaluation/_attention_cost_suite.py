"""The "attention_cost" suite kind: each scorer's ranking of the prompt's
tokens against their future importance on the full cache's greedy
continuation, independent of the budget.

  normalised_cost  per (layer, KV head), the ranking's cost over the
                   oracle's (1.0 = the oracle; objective.normalised_cost),
                   one row per sample at budget ALL
  evicted_share    with eval.metrics "evicted_share": each head's share of
                   its cached future importance that keeping the top b
                   evicts, at the budgets of _evicted_share.BUDGETS the
                   protected set fits in (kvp_jax.evaluation._evicted_share)

  {"kind": "attention_cost", "sources": [...], "max_new_tokens": n}
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kvp_jax import cache as cache_lib
from kvp_jax import eviction as eviction_lib
from kvp_jax import objective
from kvp_jax.evaluation import _evicted_share as evicted_share_lib
from kvp_jax.evaluation import _suites
from kvp_jax.evaluation import _teacher_forced as tf


@_suites.register
class AttentionCostSuite(_suites.SuiteKind):
  kind = "attention_cost"

  def run(self, run: _suites.SuiteRun,
          batch: Sequence[_suites.Item]) -> None:
    model, grid = run.model, run.grid
    ids = [i.sample.id for i in batch]
    names = [n for n in grid.scorers if not run.log.has_all(
        grid.ranking_cell(run.suite, n), ids, ("normalised_cost",))]
    budgets = share_budgets(grid.protected) if grid.evicted_share else ()
    shares = [n for n in grid.scorers if not all(
        run.log.has_all(grid.ranking_cell(run.suite, n, b), ids,
                        ("evicted_share",)) for b in budgets)]
    if not names and not shares:
      return
    max_new = max(i.max_new_tokens for i in batch)
    context = eviction_lib.prefill_context(
        model, [list(i.prompt) for i in batch], capture=True)
    full, _ = eviction_lib.generate_compressed(
        model, None, grid.full_eviction(), context, max_new)
    importance = tf.oracle_importance(model, batch, full, max_new)
    views = context.views(model.config, importance)
    lengths = jnp.asarray(context.lengths)
    for name in dict.fromkeys(names + shares):
      scores = eviction_lib.score_layers(grid.scorers[name], views,
                                         jax.random.fold_in(run.rng,
                                                            len(name)))
      if name in shares:
        _log_evicted_share(run, batch, name, views, scores, lengths, budgets)
      if name in names:
        _log_cost(run, batch, name, views, scores, lengths)


def share_budgets(protected: cache_lib.Protected) -> tuple[int, ...]:
  """The evicted-share budgets (_evicted_share.BUDGETS) the protected set
  fits in."""
  return tuple(b for b in evicted_share_lib.BUDGETS if b >= protected.size)


def _log_cost(run, batch, name, views, scores, lengths) -> None:
  """Per sample: each head's normalised cost ([L, K], NaN where the head
  had no future importance to lose) and their mean as value."""
  costs, counts = [], []
  for view, s in zip(views, scores):
    cost, informative = _ranking_cost(s, view.importance, view.positions,
                                      lengths, run.grid.protected)
    costs.append(np.asarray(cost))                           # [B, K]
    counts.append(np.asarray(informative))
  costs = np.stack(costs, 1)                                 # [B, L, K]
  counts = np.stack(counts, 1)
  cell = run.grid.ranking_cell(run.suite, name)
  run.log.add(cell.row(
      item, "normalised_cost",
      float(np.nanmean(np.where(counts[i], costs[i], np.nan))),
      per_head=np.where(counts[i], costs[i], np.nan).tolist())
              for i, item in enumerate(batch))


def _log_evicted_share(run, batch, name, views, scores, lengths,
                       budgets) -> None:
  """Per sample and budget: each head's evicted share ([L, K], NaN where
  not counted), the sample's geometric mean over counted heads as value,
  and the global layers (window None) for the report's split."""
  config = run.model.config
  per_layer = [np.asarray(evicted_share_lib.evicted_share(
      s, view.importance, view.positions, lengths, budgets,
      run.grid.protected)[0]) for view, s in zip(views, scores)]
  shares = np.stack(per_layer, 1)                            # [B, L, K, N]
  glob = [i for i in range(config.num_layers)
          if config.layer_window(i) is None]
  rows = []
  for i, item in enumerate(batch):
    for j, b in enumerate(budgets):
      geo = evicted_share_lib.aggregate_evicted_share(shares[i, ..., j:j + 1],
                                                      glob)
      rows.append(run.grid.ranking_cell(run.suite, name, b).row(
          item, "evicted_share", float(geo["all"][0]),
          per_head=shares[i, ..., j].tolist(), global_layers=glob))
  run.log.add(rows)


@functools.partial(jax.jit, static_argnames=("protected",))
def _ranking_cost(scores, importance, positions, lengths,
                  protected: cache_lib.Protected):
  """[B, K] normalised cost of each head's ranking and whether the head had
  any future importance to lose; the protected tokens are not ranked."""
  ranked = (positions >= protected.num_sinks) & (
      positions < lengths[:, None, None] - protected.num_recent)
  order = objective.deterministic_order(scores, ranked)
  cost = objective.normalised_cost(order, importance, ranked)
  informative = objective.oracle_cost(importance, ranked) > 1e-30
  return cost, informative
