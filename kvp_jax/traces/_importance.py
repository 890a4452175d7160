"""Future importance: how much attention each cached token will receive.

For a KV head with G query heads (method section 2):

  W_g[t, j] = softmax_{j' visible from t}(q_g[t] . k[j'])[j]   (float32, the
              model's own causal and sliding-window masks)
  A[t, j]   = max_g W_g[t, j]
  I_P[j]    = sum_{t = P}^{T-1} A[t, j]       for prompt tokens j < P

Softmax rows do not depend on P, so one pass over the rows gives I for any
number of split points P: I_P = sum_t [t >= P] A[t, :].

The value-weighted target (beyond the paper, an ablation of what the agents
predict) weighs each head's attention by the size of what the token writes
through that head's output projection:

  A^v[t, j] = max_g W_g[t, j] * ||W_O^g v_j||

(W_O^g: query head g's rows of the output projection, `value_write_norms`).
Gemma normalises the attention output after W_O, so this is the size of
token j's share of the pre-norm write, not of the residual update itself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kvp_jax.model import attention_mask


def value_write_norms(v: jax.Array, o_kernel: jax.Array) -> jax.Array:
  """||W_O^g v_j|| for every token j and query head g of its KV head.

  Args:
    v: [batch, T, kv_heads, head_dim] values as cached.
    o_kernel: [heads, head_dim, width] the layer's output projection (query
      head n = kv_head * G + g, as the model groups them).
  Returns:
    [batch, T, kv_heads, G] float32.
  """
  n, h, d = o_kernel.shape
  kv = v.shape[2]
  w = o_kernel.astype(jnp.float32).reshape(kv, n // kv, h, d)   # [K, G, H, D]
  out = jnp.einsum("btkh,kghd->btkgd", v.astype(jnp.float32), w,
                   precision=jax.lax.Precision.HIGHEST)
  return jnp.sqrt(jnp.sum(out * out, axis=-1))


def future_importance(q: jax.Array, k: jax.Array, positions: jax.Array,
                      split_points: jax.Array, window: int | None,
                      softcap: float | None = None,
                      query_block: int = 512,
                      value_norms: jax.Array | None = None) -> jax.Array:
  """Future importance of every token of one layer, for several split points.

  Args:
    q: [batch, T, heads, head_dim] queries as the model uses them (post-RoPE,
      scaled), any column order.
    k: [batch, T, kv_heads, head_dim] keys as cached.
    positions: [batch, T] int32 position of each column (-1: padding).
    split_points: [batch, P] int32 prompt lengths: I for split p sums the
      rows of queries at positions >= p and is zero for keys at >= p.
    window: the layer's sliding window or None.
    softcap: attention logit soft-cap, as in the model.
    query_block: rows processed at a time (bounds memory to
      [batch, heads, query_block, T]).
    value_norms: [batch, T, kv_heads, G] per column and query head, the
      weights of the value-weighted target (`value_write_norms`); None: the
      paper's attention mass.
  Returns:
    [batch, P, kv_heads, T] float32 importance, in the columns' order.
  """
  b, t, n, h = q.shape
  kv = k.shape[2]
  keys = jnp.swapaxes(k, 1, 2).astype(jnp.float32)               # [B, K, T, H]
  key_pos = jnp.broadcast_to(positions[:, None], (b, kv, t))
  pad = (-t) % query_block
  qp = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0))).astype(jnp.float32)
  pp = jnp.pad(positions, ((0, 0), (0, pad)), constant_values=-1)
  nb = qp.shape[1] // query_block
  qb = jnp.moveaxis(qp.reshape(b, nb, query_block, kv, n // kv, h), 1, 0)
  pb = jnp.moveaxis(pp.reshape(b, nb, query_block), 1, 0)

  # [B, K, G, 1, T]: each query head's weight on each column.
  weights = None if value_norms is None else jnp.transpose(
      value_norms.astype(jnp.float32), (0, 2, 3, 1))[:, :, :, None, :]

  def block(acc, args):
    qc, pc = args                                  # [B, c, K, G, H], [B, c]
    s = jnp.einsum("bckgh,bksh->bkgcs", qc, keys,
                   precision=jax.lax.Precision.HIGHEST)          # [B, K, G, c, T]
    if softcap is not None:
      s = jnp.tanh(s / softcap) * softcap
    mask = attention_mask(pc, key_pos, window)[:, :, None]       # [B, K, 1, c, T]
    s = jnp.where(mask, s, -jnp.inf)
    w = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))
    w = jnp.where(mask, w, 0.0)
    w = w / jnp.maximum(jnp.sum(w, axis=-1, keepdims=True), 1e-30)
    if weights is not None:
      w = w * weights
    a = jnp.max(w, axis=2)                                       # [B, K, c, T]
    rows = (pc[:, None, :] >= split_points[:, :, None]) & (pc[:, None, :] >= 0)
    return acc + jnp.einsum("bpc,bkcs->bpks", rows.astype(jnp.float32), a,
                            precision=jax.lax.Precision.HIGHEST), None

  acc = jnp.zeros((b, split_points.shape[1], kv, t), jnp.float32)
  acc, _ = jax.lax.scan(block, acc, (qb, pb))
  keep = (positions[:, None, None, :] < split_points[:, :, None, None]) & (
      positions[:, None, None, :] >= 0)
  return jnp.where(keep, acc, 0.0)
