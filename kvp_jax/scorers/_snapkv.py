"""SnapKV: attention from an observation window of recent queries (method
section 6; Li et al. 2024, arXiv 2404.14469; as in kvpress's SnapKVPress)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from kvp_jax.cache import _slots
from kvp_jax.scorers._attention_stats import last_queries_attention
from kvp_jax.scorers._base import register, Scorer


@register
@dataclasses.dataclass(frozen=True)
class SnapKVScorer(Scorer):
  """Window attention, averaged and smoothed; the window itself +inf.

  The observation window is the last `window_size` queries of view.queries
  (fewer if fewer were captured). For a token j before the window:
  a_j = attention probability on j averaged over the window's queries and
  the heads of the GQA group; then, in position order over those tokens,
  a 1-D average pool of width `kernel_size` (zero padding, divided by the
  kernel size, as torch's avg_pool1d). Tokens at or after the first window
  query's position score +inf. Shape [batch, kv_heads, slots].
  """
  name = "snapkv"
  needs = frozenset({"queries"})
  window_size: int = 64
  kernel_size: int = 5

  def __post_init__(self):
    if self.kernel_size < 1 or self.kernel_size % 2 == 0:
      raise ValueError(f"kernel_size={self.kernel_size} must be odd")

  def _score(self, view, rng):
    q = view.queries[:, -self.window_size:]
    qpos = view.query_positions[:, -self.window_size:]              # [B, W]
    probs = last_queries_attention(q, qpos, view.keys, view.positions,
                                   view.window, view.logit_softcap)
    num_q = jnp.maximum(jnp.sum(qpos >= 0, axis=1), 1)              # [B]
    attn = (jnp.mean(jnp.sum(probs, axis=3), axis=2)
            / num_q[:, None, None])                                 # [B, K, S]

    start = jnp.min(jnp.where(qpos >= 0, qpos, jnp.iinfo(jnp.int32).max),
                    axis=1)                                         # [B]
    in_window = view.valid & (view.positions >= start[:, None, None])
    before = view.valid & ~in_window
    so = _slots.slot_order(jnp.where(before, view.positions, -1))
    sorted_attn = _slots.to_sorted(jnp.where(before, attn, 0.0), so)
    half = self.kernel_size // 2
    pooled = jax.lax.reduce_window(
        sorted_attn, 0.0, jax.lax.add, (1, 1, self.kernel_size), (1, 1, 1),
        ((0, 0), (0, 0), (half, half))) / self.kernel_size
    score = _slots.from_sorted(pooled, so)
    return jnp.where(in_window, jnp.inf, score)
