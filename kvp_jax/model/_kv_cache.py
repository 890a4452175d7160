"""The KV cache the decoder reads and writes: explicit arrays, no hidden state.

Each layer holds keys and values in slots, together with the absolute
position of the token in every slot. Attention masks are computed from those
positions, never from slot indices, so a cache whose slots were reordered or
compacted by eviction still gives the right causal and sliding-window masks
(keys are cached after RoPE, so they carry their position already).

A layer's slots form a ring: a write of T tokens goes to slots
`(end + arange(T)) % capacity`. A layer whose capacity is at least its
sliding window can therefore hold an unbounded stream (a key falls out of the
window before its slot is reused), provided a batch's rows are left-padded so
that all rows advance together. A compacted cache (kvp_jax.cache) has no such
guarantee: its owner leaves enough room or evicts before the ring wraps.
"""

from __future__ import annotations

from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp

EMPTY_POSITION = -1


@flax.struct.dataclass
class LayerCache:
  """One layer's cache.

  Attributes:
    k: [batch, kv_heads, capacity, head_dim] keys after k-norm and RoPE.
    v: [batch, kv_heads, capacity, head_dim] values.
    pos: [batch, kv_heads, capacity] int32 absolute position of each slot's
      token; EMPTY_POSITION (-1) marks an empty slot. Per head, because
      eviction keeps different tokens in different heads.
    end: [] int32, the number of slots written so far; the next write starts
      at slot `end % capacity`.
  """
  k: jax.Array
  v: jax.Array
  pos: jax.Array
  end: jax.Array

  @property
  def capacity(self) -> int:
    return self.k.shape[2]

  @property
  def valid(self) -> jax.Array:
    """[batch, kv_heads, capacity] bool: slots holding a token."""
    return self.pos >= 0

  def write(self, k: jax.Array, v: jax.Array, pos: jax.Array) -> "LayerCache":
    """Appends a chunk of T tokens.

    Args:
      k, v: [batch, T, kv_heads, head_dim].
      pos: [batch, T] int32 positions (-1 for padding, stored as empty).
    Returns:
      The cache with the chunk written at slots (end + arange(T)) % capacity.
      When T exceeds the capacity only the chunk's last `capacity` tokens are
      kept (they are the ones a ring of that size would hold).
    """
    t, cap = k.shape[1], self.capacity
    end = self.end
    if t > cap:
      k, v, pos = k[:, t - cap:], v[:, t - cap:], pos[:, t - cap:]
      end = end + (t - cap)
      t = cap
    k = jnp.swapaxes(k, 1, 2).astype(self.k.dtype)   # [B, K, T, H]
    v = jnp.swapaxes(v, 1, 2).astype(self.v.dtype)
    pos = jnp.broadcast_to(pos[:, None, :], k.shape[:3]).astype(jnp.int32)
    if t == 1:
      slot = end % cap
      new = (jax.lax.dynamic_update_slice_in_dim(self.k, k, slot, axis=2),
             jax.lax.dynamic_update_slice_in_dim(self.v, v, slot, axis=2),
             jax.lax.dynamic_update_slice_in_dim(self.pos, pos, slot, axis=2))
    else:
      slots = (end + jnp.arange(t)) % cap
      new = (self.k.at[:, :, slots].set(k), self.v.at[:, :, slots].set(v),
             self.pos.at[:, :, slots].set(pos))
    return LayerCache(k=new[0], v=new[1], pos=new[2], end=end + t)


@flax.struct.dataclass
class KVCache:
  """The whole decoder's cache: one LayerCache per layer (capacities may
  differ between layers, e.g. sliding-window layers need only the window)."""
  layers: tuple[LayerCache, ...]

  @property
  def num_layers(self) -> int:
    return len(self.layers)

  @property
  def capacities(self) -> tuple[int, ...]:
    return tuple(layer.capacity for layer in self.layers)

  def num_bytes(self) -> int:
    return sum(x.size * x.dtype.itemsize
               for x in jax.tree_util.tree_leaves(self))


def empty_layer_cache(batch: int, kv_heads: int, capacity: int, head_dim: int,
                      dtype) -> LayerCache:
  """A LayerCache with every slot empty."""
  shape = (batch, kv_heads, capacity, head_dim)
  return LayerCache(
      k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
      pos=jnp.full(shape[:3], EMPTY_POSITION, jnp.int32),
      end=jnp.zeros((), jnp.int32))


def layer_capacities(config, max_len: int, *,
                     window_rings: bool = True) -> tuple[int, ...]:
  """Full-cache capacity of each layer for sequences of up to max_len tokens.

  Sliding-window layers need only `sliding_window` slots (a ring), global
  layers need max_len; with window_rings=False every layer gets max_len.
  """
  caps = []
  for layer in range(config.num_layers):
    window = config.layer_window(layer)
    caps.append(min(max_len, window) if (window and window_rings) else max_len)
  return tuple(caps)


def init_cache(config, batch: int, capacities: int | Sequence[int],
               dtype=None) -> KVCache:
  """An empty KVCache.

  Args:
    config: DecoderConfig.
    batch: rows.
    capacities: slots per layer (one int for all layers, or one per layer);
      `layer_capacities(config, max_len)` gives a full cache's.
    dtype: cache dtype, the config's compute dtype by default.
  """
  if isinstance(capacities, int):
    capacities = (capacities,) * config.num_layers
  if len(capacities) != config.num_layers:
    raise ValueError(f"{len(capacities)} capacities for "
                     f"{config.num_layers} layers")
  dtype = dtype or jnp.dtype(config.compute_dtype)
  return KVCache(layers=tuple(
      empty_layer_cache(batch, config.num_kv_heads, cap, config.head_dim, dtype)
      for cap in capacities))


def attention_mask(query_pos: jax.Array, key_pos: jax.Array,
                   window: int | None) -> jax.Array:
  """Which keys each query may attend to, from absolute positions.

  Args:
    query_pos: [batch, T] int32 (-1: padding query).
    key_pos: [batch, kv_heads, S] int32 (-1: empty slot).
    window: sliding window, or None for global attention.
  Returns:
    [batch, kv_heads, T, S] bool: key_pos valid, key_pos <= query_pos and,
    with a window, query_pos - key_pos < window.
  """
  q = query_pos[:, None, :, None]
  k = key_pos[:, :, None, :]
  mask = (k >= 0) & (k <= q)
  if window is not None:
    mask &= (q - k) < window
  return mask
