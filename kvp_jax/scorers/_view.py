"""What a scorer sees: one layer's cache at eviction time."""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

# The optional fields a scorer may declare in `Scorer.needs` (besides "rng").
OPTIONAL_FIELDS = ("queries", "attention_sums", "attention_counts",
                   "attention_sq_sums", "importance")


@flax.struct.dataclass(kw_only=True)
class LayerView:
  """One layer's cached tokens, plus whatever statistics a scorer may need.

  Slots are in arbitrary order (eviction compacts them), so a scorer that
  depends on token order sorts by `positions`. Optional fields are None when
  absent; which ones exist is part of the pytree structure, so it is static
  under jit.

  Attributes:
    keys: [batch, kv_heads, slots, head_dim] post-RoPE keys, as cached.
    values: [batch, kv_heads, slots, head_dim].
    positions: [batch, kv_heads, slots] int32 absolute positions, -1 = empty.
    context_length: [batch] int32, number of tokens seen so far (the next
      token's position), for scores relative to the end of the context.
    layer: the layer index (static).
    window: the layer's sliding window, or None for a global layer (static).
    logit_softcap: the model's attention logit soft-cap, or None (static);
      attention-based scorers apply it as the model does.
    queries: optional [batch, Tq, heads, head_dim], the last Tq prefill
      queries in position order, post-RoPE and scaled (as Captured.q).
    query_positions: optional [batch, Tq] int32 positions of those queries
      (-1 for padding); required with `queries`.
    attention_sums: optional [batch, kv_heads, slots] float32, the attention
      each slot received summed over all prefill queries and averaged over
      the GQA group (see attention_column_sums).
    attention_counts: optional [batch, kv_heads, slots] float32, how many of
      those queries could attend to each slot (causal, within the window;
      see attention_column_moments). With attention_sums and
      attention_sq_sums: the temporal mean and spread RoCo reads.
    attention_sq_sums: optional [batch, kv_heads, slots] float32, the sum
      over the same queries of the squared group-mean attention probability.
    importance: optional [batch, kv_heads, slots] float32, the true future
      importance of each slot (the oracle's target; method section 2).
  """
  keys: jax.Array
  values: jax.Array
  positions: jax.Array
  context_length: jax.Array
  layer: int = flax.struct.field(pytree_node=False, default=0)
  window: int | None = flax.struct.field(pytree_node=False, default=None)
  logit_softcap: float | None = flax.struct.field(pytree_node=False,
                                                  default=None)
  queries: jax.Array | None = None
  query_positions: jax.Array | None = None
  attention_sums: jax.Array | None = None
  attention_counts: jax.Array | None = None
  attention_sq_sums: jax.Array | None = None
  importance: jax.Array | None = None

  @property
  def valid(self) -> jax.Array:
    """[batch, kv_heads, slots] bool: slots holding a token."""
    return self.positions >= 0

  @property
  def num_kv_heads(self) -> int:
    return self.keys.shape[1]

  def has(self, name: str) -> bool:
    """Whether the optional field `name` is present."""
    return getattr(self, name) is not None

  @classmethod
  def from_cache(cls, cache, *, layer: int = 0, window: int | None = None,
                 context_length: jax.Array | None = None,
                 **optional) -> "LayerView":
    """A view of a LayerCache (anything with k, v, pos attributes).

    Args:
      cache: LayerCache with k, v [B, K, S, H] and pos [B, K, S].
      layer, window: the layer's index and sliding window.
      context_length: [batch] int32; by default one past the largest cached
        position of each row.
      **optional: logit_softcap, queries, query_positions, attention_sums,
        attention_counts, attention_sq_sums, importance.
    """
    if context_length is None:
      context_length = jnp.max(cache.pos, axis=(1, 2)).astype(jnp.int32) + 1
    return cls(keys=cache.k, values=cache.v, positions=cache.pos,
               context_length=context_length, layer=layer, window=window,
               **optional)
