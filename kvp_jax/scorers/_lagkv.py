"""LagKV: lag-relative statistics of keys and values (method section 6;
Liang et al. 2025, arXiv 2504.04704; as in kvpress's LagKVPress)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from kvp_jax.cache import _slots
from kvp_jax.scorers._base import register, Scorer


def _partition_scores(x: jax.Array) -> jax.Array:
  """LagKV's score of every token of every partition but the last.

  Args:
    x: [B, K, P, lag, H] keys or values in position order, in partitions.
  Returns:
    [B, K, P, lag]: for partition p, x min-max normalised per head dim with
    the min and max of partition p + 1, then the std over the head dim
    (unbiased), then a softmax over the partition's tokens. The last
    partition (no reference) gets meaningless values.
  """
  lo = jnp.min(x, axis=3)                                         # [B, K, P, H]
  hi = jnp.max(x, axis=3)
  # The reference of partition p is partition p + 1.
  lo = jnp.concatenate([lo[:, :, 1:], lo[:, :, -1:]], axis=2)
  hi = jnp.concatenate([hi[:, :, 1:], hi[:, :, -1:]], axis=2)
  span = hi - lo
  span = jnp.where(span > 0, span, 1.0)   # A constant dim would divide by 0.
  normed = (x - lo[:, :, :, None]) / span[:, :, :, None]   # [B, K, P, lag, H]
  return jax.nn.softmax(jnp.std(normed, axis=-1, ddof=1), axis=-1)


@register
@dataclasses.dataclass(frozen=True)
class LagKVScorer(Scorer):
  """LagKV scores; shape [batch, kv_heads, slots].

  In position order, the valid tokens are split into `num_sinks` sinks, then
  partitions of `lag` tokens; the last full partition and the remainder form
  the tail. Each earlier partition is scored against the next one: per
  token, the mean over k and v of softmax_partition(std_head_dim(
  (x - min_next) / (max_next - min_next))). As in kvpress, the score is
  turned into the token's rank within its partition over `lag`, so that any
  budget takes the same share of every partition; ties across partitions
  (equal ranks) go to the later partition:

    score_j = (rank_in_partition_j + p_j / num_partitions) / lag  in [0, 1)

  (rank 0 = lowest LagKV score; p_j the partition index, num_partitions =
  (n - num_sinks) // lag for n valid tokens).

  Sinks and tail: +inf. A row with fewer than num_sinks + 2 lag tokens has
  no scored partition; as in kvpress, its non-sink tokens get recency
  (i - num_sinks) / (n - num_sinks) in [0, 1) for the i-th oldest of n.
  """
  name = "lagkv"
  lag: int = 128
  num_sinks: int = 4

  def _score(self, view, rng):
    b, k, s, h = view.keys.shape
    so = _slots.slot_order(view.positions)
    index = jnp.arange(s)                # i: index in position order
    n = so.count[..., None]                                      # [B, K, 1]
    recency = ((index - self.num_sinks)
               / jnp.maximum(n - self.num_sinks, 1)).astype(jnp.float32)
    short = n < self.num_sinks + 2 * self.lag

    num_parts = max(-(-(s - self.num_sinks) // self.lag), 0)
    if num_parts == 0:
      lagged = jnp.zeros((b, k, s), jnp.float32)
    else:
      end = self.num_sinks + num_parts * self.lag
      def grid(x):                       # [B, K, S, H] -> [B, K, P, lag, H]
        x = _slots.to_sorted(x.astype(jnp.float32), so)
        x = jnp.pad(x, ((0, 0), (0, 0), (0, end - s), (0, 0)))
        return x[:, :, self.num_sinks:].reshape(b, k, num_parts, self.lag, h)
      # [B, K, P, lag]
      score = 0.5 * (_partition_scores(grid(view.keys))
                     + _partition_scores(grid(view.values)))
      rank = jnp.argsort(jnp.argsort(score, axis=-1, stable=True), axis=-1)
      row_parts = jnp.maximum((n - self.num_sinks) // self.lag, 1)
      part = jnp.arange(num_parts)[:, None] / row_parts[..., None]
      lagged = ((rank + part) / self.lag).reshape(b, k, -1)
      lagged = jnp.pad(lagged, ((0, 0), (0, 0), (self.num_sinks, 0)))
      lagged = lagged[:, :, :s].astype(jnp.float32)

    part_of = (index - self.num_sinks) // self.lag
    scored = ((index >= self.num_sinks)
              & (part_of < (n - self.num_sinks) // self.lag - 1))
    sorted_scores = jnp.where(
        index < self.num_sinks, jnp.inf,
        jnp.where(short, recency, jnp.where(scored, lagged, jnp.inf)))
    return _slots.from_sorted(sorted_scores, so)
