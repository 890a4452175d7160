"""TOVA: attention from the last query (method section 6; Oren et al. 2024,
arXiv 2401.06104)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from kvp_jax.scorers._attention_stats import last_queries_attention
from kvp_jax.scorers._base import register, Scorer


@register
@dataclasses.dataclass(frozen=True)
class TOVAScorer(Scorer):
  """score_j = mean over the GQA group's heads of the last query's attention
  probability on token j; the last query's own token +inf.

  The last query is view.queries[:, -1] (queries are in position order); its
  softmax runs over every key it may see, with the layer's window. Shape
  [batch, kv_heads, slots].
  """
  name = "tova"
  needs = frozenset({"queries"})

  def _score(self, view, rng):
    q, qpos = view.queries[:, -1:], view.query_positions[:, -1:]
    probs = last_queries_attention(q, qpos, view.keys, view.positions,
                                   view.window, view.logit_softcap)
    score = jnp.mean(probs[:, :, :, 0], axis=2)                   # [B, K, S]
    last = view.positions == qpos[:, :, None]                     # [B, K, S]
    return jnp.where(last, jnp.inf, score)
