"""Prefill attention statistics for the attention-based baselines.

A fused attention kernel never materialises the attention matrix, so the
statistics H2O, TOVA and SnapKV read are recomputed here from the captured
prefill queries (Captured.q: post-RoPE, scaled) and the cached keys, with
the model's masks from absolute positions: column sums over all queries
computed block by block (never the full [T, T] matrix), the column moments
RoCo reads (how many queries saw each key, the sum and the sum of squares of
the attention it received), and the probabilities of the last few queries.
All in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kvp_jax.model import attention_mask

_MASKED = -1e30  # Finite: a query that sees nothing gives zeros, not NaN.


def _probabilities(q: jax.Array, query_pos: jax.Array, keys: jax.Array,
                   key_pos: jax.Array, window: int | None,
                   softcap: float | None) -> jax.Array:
  """Softmax attention probabilities of queries over the visible keys.

  Args:
    q: [batch, T, heads, head_dim] scaled queries.
    query_pos: [batch, T] int32 (-1: padding query, which gets all zeros).
    keys: [batch, kv_heads, S, head_dim]; key_pos: [batch, kv_heads, S].
    window: sliding window or None; softcap: logit soft-cap or None.
  Returns:
    [batch, kv_heads, G, T, S] float32, each row summing to 1 over the keys
    its query may see (0 elsewhere), G = heads // kv_heads.
  """
  b, t, n, h = q.shape
  kv = keys.shape[1]
  qg = q.astype(jnp.float32).reshape(b, t, kv, n // kv, h)     # [B, T, K, G, H]
  # [B, K, G, T, S]
  logits = jnp.einsum("btkgh,bksh->bkgts", qg, keys.astype(jnp.float32),
                      precision=jax.lax.Precision.HIGHEST)
  if softcap is not None:
    logits = jnp.tanh(logits / softcap) * softcap
  # [B, K, 1, T, S]
  mask = attention_mask(query_pos, key_pos, window)[:, :, None]
  probs = jax.nn.softmax(jnp.where(mask, logits, _MASKED), axis=-1)
  return jnp.where(mask, probs, 0.0)


def last_queries_attention(q_last: jax.Array, query_pos: jax.Array,
                           keys: jax.Array, key_pos: jax.Array,
                           window: int | None,
                           softcap: float | None = None) -> jax.Array:
  """Attention probabilities of a few queries (TOVA, SnapKV).

  Each query's softmax runs over all keys it may see (causal, and within the
  sliding window for a local layer), as in the model.

  Args:
    q_last: [batch, Tq, heads, head_dim] post-RoPE, scaled queries.
    query_pos: [batch, Tq] int32 positions (-1: padding query).
    keys: [batch, kv_heads, S, head_dim] post-RoPE keys.
    key_pos: [batch, kv_heads, S] int32 (-1: empty slot).
    window: the layer's sliding window, or None.
    softcap: attention logit soft-cap, or None.
  Returns:
    [batch, kv_heads, G, Tq, S] float32 probabilities, G = heads // kv_heads
    (query head n is head n % G of KV head n // G); 0 for masked keys and for
    padding queries.
  """
  return _probabilities(q_last, query_pos, keys, key_pos, window, softcap)


def attention_column_sums(q: jax.Array, query_pos: jax.Array,
                          keys: jax.Array, key_pos: jax.Array,
                          window: int | None, block: int = 512,
                          softcap: float | None = None) -> jax.Array:
  """Attention each key received, summed over queries (H2O's statistic).

  Queries are processed `block` at a time in a lax.scan, so the memory is
  [batch, heads, block, S], never [T, S] at once.

  Args:
    q: [batch, T, heads, head_dim] post-RoPE, scaled queries (Captured.q).
    query_pos: [batch, T] int32 positions (-1: padding query, ignored).
    keys: [batch, kv_heads, S, head_dim] post-RoPE keys.
    key_pos: [batch, kv_heads, S] int32 (-1: empty slot).
    window: the layer's sliding window, or None.
    block: queries per step.
    softcap: attention logit soft-cap, or None.
  Returns:
    [batch, kv_heads, S] float32: sum over queries t of the probability
    that query t puts on the key, averaged over the G heads of the group.
  """
  return attention_column_moments(q, query_pos, keys, key_pos, window,
                                  block=block, softcap=softcap)[1]


def _query_blocks(q: jax.Array, query_pos: jax.Array,
                  block: int) -> tuple[jax.Array, jax.Array]:
  """Queries [B, T, N, H] and positions [B, T] as [num_blocks, B, block, N, H]
  and [num_blocks, B, block], padded at the end with padding queries."""
  b, t, n, h = q.shape
  block = max(1, min(block, t))
  num_blocks = -(-t // block)
  pad = num_blocks * block - t
  q = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
  query_pos = jnp.pad(query_pos, ((0, 0), (0, pad)), constant_values=-1)
  return (q.reshape(b, num_blocks, block, n, h).swapaxes(0, 1),
          query_pos.reshape(b, num_blocks, block).swapaxes(0, 1))


def attention_column_moments(q: jax.Array, query_pos: jax.Array,
                             keys: jax.Array, key_pos: jax.Array,
                             window: int | None, block: int = 512,
                             softcap: float | None = None
                             ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per key: how many queries saw it, and the sum and sum of squares of the
  attention they put on it (RoCo's temporal mean and standard deviation).

  The attention of a query on a key is the probability averaged over the G
  query heads of the KV head's group, as in attention_column_sums (and as
  EasyKV averages the group before its statistics); the square is that
  group mean's square. A query "sees" a key when the model's mask lets it
  attend to it (causal, within the sliding window, not padding), so
  sums / counts is the key's mean attention over exactly the queries that
  could attend to it. Same block-by-block scan and memory as
  attention_column_sums ([batch, heads, block, S] at a time).

  Args:
    q: [batch, T, heads, head_dim] post-RoPE, scaled queries (Captured.q).
    query_pos: [batch, T] int32 positions (-1: padding query, ignored).
    keys: [batch, kv_heads, S, head_dim] post-RoPE keys.
    key_pos: [batch, kv_heads, S] int32 (-1: empty slot).
    window: the layer's sliding window, or None.
    block: queries per step.
    softcap: attention logit soft-cap, or None.
  Returns:
    (counts, sums, sq_sums), each [batch, kv_heads, S] float32: the number
    of queries that may attend to the key (0 for empty slots), the sum over
    those queries of the group-mean probability (= attention_column_sums),
    and the sum of its squares.
  """
  b, kv, s = keys.shape[:3]
  q, query_pos = _query_blocks(q, query_pos, block)

  def step(acc, xs):
    q_blk, pos_blk = xs
    probs = _probabilities(q_blk, pos_blk, keys, key_pos, window, softcap)
    p = jnp.mean(probs, axis=2)                              # [B, K, blk, S]
    seen = attention_mask(pos_blk, key_pos, window)          # [B, K, blk, S]
    counts, sums, sq_sums = acc
    return (counts + jnp.sum(seen, axis=2, dtype=jnp.float32),
            sums + jnp.sum(p, axis=2), sq_sums + jnp.sum(p * p, axis=2)), None

  zeros = jnp.zeros((b, kv, s), jnp.float32)
  acc, _ = jax.lax.scan(step, (zeros, zeros, zeros), (q, query_pos))
  return acc
