"""Grouped-query attention that reads and writes an explicit KV cache."""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kvp_jax.model import _layers
from kvp_jax.model._config import DecoderConfig
from kvp_jax.model._kv_cache import LayerCache, attention_mask

_MASKED = -1e30  # Finite, so a row with nothing visible (padding) is no NaN.


class KeySet(NamedTuple):
  """Keys and values attention may read, with their positions.

  k, v: [batch, kv_heads, S, head_dim]; pos: [batch, kv_heads, S] (-1 empty).
  """
  k: jax.Array
  v: jax.Array
  pos: jax.Array


class Captured(NamedTuple):
  """A layer's projections, as the trace generator needs them.

  q: [batch, T, heads, head_dim] after q-norm, RoPE and query scaling.
  k, v: [batch, T, kv_heads, head_dim]; k after k-norm and RoPE (as cached).
  """
  q: jax.Array
  k: jax.Array
  v: jax.Array


def chunk_keys(k: jax.Array, v: jax.Array, positions: jax.Array) -> KeySet:
  """KeySet of a chunk's own tokens: k, v [B, T, K, H], positions [B, T]."""
  kt, vt = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)     # [B, K, T, H]
  return KeySet(kt, vt, jnp.broadcast_to(positions[:, None], kt.shape[:3]))


def grouped_attention(q: jax.Array, query_pos: jax.Array,
                      key_sets: tuple[KeySet, ...], window: int | None,
                      softcap: float | None = None,
                      query_block: int | None = None) -> jax.Array:
  """Softmax attention of queries over the union of several key sets.

  One softmax runs over all sets together (their logits are concatenated), so
  attending over (cache, new chunk) needs no copy of the cache.

  Args:
    q: [batch, T, heads, head_dim], already scaled.
    query_pos: [batch, T] int32.
    key_sets: KeySets with [batch, kv_heads, S_i, head_dim] arrays.
    window: sliding window of this layer, or None.
    softcap: optional tanh soft-cap of the logits.
    query_block: when T is larger, queries are processed this many at a time
      (lax.map), so the logits never exceed [batch, heads, block, S].
  Returns:
    [batch, T, heads, head_dim] in q's dtype.
  """
  t = q.shape[1]
  if query_block is None or t <= query_block:
    return _attend(q, query_pos, key_sets, window, softcap)
  pad = (-t) % query_block
  qp = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
  pp = jnp.pad(query_pos, ((0, 0), (0, pad)), constant_values=-1)
  nb = qp.shape[1] // query_block
  qb = jnp.moveaxis(qp.reshape(q.shape[0], nb, query_block, *q.shape[2:]), 1, 0)
  pb = jnp.moveaxis(pp.reshape(q.shape[0], nb, query_block), 1, 0)
  out = jax.lax.map(lambda a: _attend(a[0], a[1], key_sets, window, softcap),
                    (qb, pb))                            # [nb, B, blk, N, H]
  out = jnp.moveaxis(out, 0, 1).reshape(qp.shape)
  return out[:, :t]


def _attend(q, query_pos, key_sets, window, softcap):
  b, t, n, h = q.shape
  kv = key_sets[0].k.shape[1]
  qg = q.reshape(b, t, kv, n // kv, h)                           # [B, T, K, G, H]
  logits = []
  for ks in key_sets:
    s = jnp.einsum("btkgh,bksh->bkgts", qg, ks.k,
                   preferred_element_type=jnp.float32)           # [B, K, G, T, S]
    if softcap is not None:
      s = jnp.tanh(s / softcap) * softcap
    mask = attention_mask(query_pos, ks.pos, window)             # [B, K, T, S]
    logits.append(jnp.where(mask[:, :, None], s, _MASKED))
  probs = jax.nn.softmax(jnp.concatenate(logits, axis=-1), axis=-1)
  out = jnp.zeros((b, kv, n // kv, t, h), jnp.float32)
  start = 0
  for ks in key_sets:
    size = ks.k.shape[2]
    p = probs[..., start:start + size].astype(ks.v.dtype)
    out += jnp.einsum("bkgts,bksh->bkgth", p, ks.v,
                      preferred_element_type=jnp.float32)
    start += size
  out = jnp.transpose(out, (0, 3, 1, 2, 4)).reshape(b, t, n, h)  # [B, T, N, H]
  return out.astype(q.dtype)


class Attention(nn.Module):
  """Gemma 3 attention block for one layer."""
  config: DecoderConfig
  layer: int

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array,
               cache: LayerCache | None, fresh: bool, capture: bool):
    """Attention over the cache and the new tokens.

    Args:
      x: [batch, T, width] normalised inputs.
      positions: [batch, T] int32 absolute positions (-1 for padding).
      cache: the layer's cache, or None for a pure forward over the chunk.
      fresh: the cache is known to be empty, so attention reads only the
        chunk (a prefill); the chunk is still written into the cache.
      capture: also return the Captured projections.
    Returns:
      (out [batch, T, width], updated cache or None, Captured or None).
    """
    c = self.config
    d, n, k, h = c.width, c.num_heads, c.num_kv_heads, c.head_dim
    q = _layers.Einsum((d, n, h), "btd,dnh->btnh", c.param_dtype,
                       name="q_proj")(x)                          # [B, T, N, H]
    key = _layers.Einsum((d, k, h), "btd,dkh->btkh", c.param_dtype,
                         name="k_proj")(x)                        # [B, T, K, H]
    value = _layers.Einsum((d, k, h), "btd,dkh->btkh", c.param_dtype,
                           name="v_proj")(x)                      # [B, T, K, H]
    if c.use_qk_norm:
      q = _layers.RMSNorm(c.rms_eps, c.param_dtype, name="query_norm")(q)
      key = _layers.RMSNorm(c.rms_eps, c.param_dtype, name="key_norm")(key)
    base = c.layer_rope_base(self.layer)
    q = _layers.apply_rope(q, positions, base) * jnp.asarray(c.query_scale,
                                                              q.dtype)
    key = _layers.apply_rope(key, positions, base)

    sets = (chunk_keys(key, value, positions),)
    if cache is not None and not fresh:
      sets = (KeySet(cache.k, cache.v, cache.pos),) + sets
    out = grouped_attention(q, positions, sets, c.layer_window(self.layer),
                            c.attn_logit_softcap, c.attention_query_block)
    out = _layers.Einsum((n, h, d), "btnh,nhd->btd", c.param_dtype,
                         name="o_proj")(out)                      # [B, T, D]
    if cache is not None:
      cache = cache.write(key, value, positions)
    captured = Captured(q, key, value) if capture else None
    return out, cache, captured
