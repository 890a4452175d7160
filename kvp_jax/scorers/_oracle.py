"""The oracle: the true future importance (method sections 2 and 6)."""

from __future__ import annotations

import dataclasses

from kvp_jax.scorers._base import register, Scorer


@register
@dataclasses.dataclass(frozen=True)
class OracleScorer(Scorer):
  """score_j = I_j, the attention the future queries put on token j (GQA
  max over the group, summed over the future; kvp_jax.traces computes it).

  Shape [batch, kv_heads, slots]. An upper bound, not deployable: it reads
  the future.
  """
  name = "oracle"
  needs = frozenset({"importance"})

  def _score(self, view, rng):
    return view.importance
