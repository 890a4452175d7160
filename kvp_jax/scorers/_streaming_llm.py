"""StreamingLLM: attention sinks, then recency (method section 6;
Xiao et al. 2023, arXiv 2309.17453)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from kvp_jax.scorers._base import register, Scorer


@register
@dataclasses.dataclass(frozen=True)
class StreamingLLMScorer(Scorer):
  """The first `num_sinks` tokens first, then the most recent.

  score_j = +inf if pos_j < num_sinks, else pos_j - context_length (the
  negated age, -1 for the newest token): larger position = higher.
  Shape [batch, kv_heads, slots]. Positions are absolute, so the rule is
  the same for slots in any order.
  """
  name = "streaming_llm"
  num_sinks: int = 4

  def _score(self, view, rng):
    pos = view.positions
    age = pos - view.context_length[:, None, None]                # [B, K, S]
    return jnp.where(pos < self.num_sinks, jnp.inf, age.astype(jnp.float32))
