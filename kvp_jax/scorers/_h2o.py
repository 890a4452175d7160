"""H2O: heavy hitters plus a recent window (method section 6; Zhang et al.
2023, arXiv 2306.14048)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from kvp_jax.cache import _slots
from kvp_jax.scorers._base import register, Scorer


@register
@dataclasses.dataclass(frozen=True)
class H2OScorer(Scorer):
  """Heavy hitters (accumulated attention) and recent tokens, interleaved.

  H2O splits a budget b between the tokens that received the most attention
  so far (view.attention_sums: summed over all prefill queries, averaged
  over the GQA group) and the most recent tokens, in equal halves by
  default. One ranking serves every budget by interleaving the two orders:
  with r_rec the recency rank (0 = newest) and r_hh the heavy-hitter rank
  (0 = most attention; ties to the newer token),

    score_j = -min(r_rec_j / f, (r_hh_j + 1/2) / (1 - f)),  f = recent_fraction

  so the top b are the union of about f b most recent and (1 - f) b heaviest
  tokens (the half offset breaks ties in favour of recency). f = 0 ranks by
  attention alone, f = 1 by recency alone. Shape [batch, kv_heads, slots];
  the scores are negated ranks, comparable only within a (batch, head).
  """
  name = "h2o"
  needs = frozenset({"attention_sums"})
  recent_fraction: float = 0.5

  def __post_init__(self):
    if not 0.0 <= self.recent_fraction <= 1.0:
      raise ValueError(f"recent_fraction={self.recent_fraction} not in [0, 1]")

  def _score(self, view, rng):
    valid, pos = view.valid, view.positions
    r_rec = _slots.rank_descending(pos, pos, valid).astype(jnp.float32)
    r_hh = _slots.rank_descending(view.attention_sums.astype(jnp.float32), pos,
                                  valid).astype(jnp.float32)
    f = self.recent_fraction
    if f == 0.0:
      return -r_hh
    if f == 1.0:
      return -r_rec
    return -jnp.minimum(r_rec / f, (r_hh + 0.5) / (1.0 - f))
