"""Eviction as a pure gather: rank each head's slots, keep the top b, compact.

The inference protocol (method section 5): after the prefill, every
(layer, KV head) ranks its cached tokens with its scorer and keeps the top b.
The protected tokens (a `Protected`: the first `num_sinks` and the last
`num_recent` tokens of the context) are always kept and count inside b.
This module turns scores into that kept set and builds the smaller cache
that holds it:

  select_top  scores [B, K, S] -> keep_idx [B, K, b]  (slot indices, -1: none)
  compact     (LayerCache, keep_idx, capacity) -> LayerCache of `capacity`
  evict_layer / evict   both steps, for one layer / the whole KVCache

Kept entries keep their absolute positions, so RoPE'd keys and the
position-based causal and sliding-window masks stay right. Budgets and
capacities are Python ints (static under jit); per-head budgets (adaptive
allocation, kvp_jax.cache._allocation) are int arrays with a static maximum.

Layout of a compacted layer. The kept tokens of each head fill slots 0..b-1
in ascending position order and are right-aligned: a head that keeps n < b
tokens has its n tokens in slots b-n..b-1 and empty slots before them. `end`
is b, so the next write goes to slot b. With this layout a kept token is
overwritten by the ring no earlier than `capacity` positions after its own:
  * a sliding-window layer whose capacity is at least its window can decode
    for ever after compaction (a slot is reused only once its token has left
    the window), exactly like the full ring;
  * a global layer must have capacity >= b + the tokens still to be appended,
    or be evicted again before the ring wraps (eviction during decoding).
`eviction_capacities` computes such capacities.
"""

from __future__ import annotations

import numbers
from typing import Sequence, Union

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from kvp_jax.cache._protected import Protected
from kvp_jax.model._kv_cache import EMPTY_POSITION, KVCache, LayerCache

NO_SLOT = -1    # A keep_idx entry that keeps nothing.

Budget = Union[int, jax.Array, np.ndarray]


@flax.struct.dataclass
class Budgets:
  """Per-head budgets of every layer, as an allocator returns them.

  Attributes:
    per_head: one [batch, kv_heads] int32 array per layer, the tokens each
      head keeps (protected ones included).
    widths: per layer, a static int >= every budget of the layer: the number
      of slots a compacted layer reserves for its kept tokens (so the memory
      of the compacted cache follows the widths, not the budgets).
  """
  per_head: tuple[jax.Array, ...]
  widths: tuple[int, ...] = flax.struct.field(pytree_node=False)

  @property
  def totals(self) -> jax.Array:
    """[batch] int32: tokens kept over all layers and heads."""
    return sum(jnp.sum(b, axis=-1) for b in self.per_head)


def check_budget(budget, protected: Protected, what: str = "budget") -> int:
  """`budget` as a Python int, or a ValueError saying what is wrong."""
  if isinstance(budget, bool) or not isinstance(budget, numbers.Integral):
    raise ValueError(f"{what} must be a Python int (a static number of slots "
                     f"per head) or an integer array of per-head budgets, got "
                     f"{budget!r} of type {type(budget).__name__}")
  budget = int(budget)
  if budget < protected.size:
    raise ValueError(f"{what}={budget} is below the minimum {protected.size}: "
                     f"the {protected.num_sinks} sink and "
                     f"{protected.num_recent} recent tokens are always kept "
                     f"and count inside the budget")
  return budget


def keep_mask_protected(positions: jax.Array, context_length: jax.Array,
                        protected: Protected) -> jax.Array:
  """Slots that are always kept: the sinks and the most recent tokens.

  Args:
    positions: [batch, kv_heads, slots] int32 absolute positions, -1 = empty.
    context_length: [batch] int32, tokens seen so far (the next position).
    protected: tokens at positions < num_sinks and at positions >=
      context_length - num_recent are kept.
  Returns:
    [batch, kv_heads, slots] bool, False on empty slots.
  """
  ctx = jnp.asarray(context_length, jnp.int32)[:, None, None]     # [B, 1, 1]
  valid = positions >= 0
  return valid & ((positions < protected.num_sinks) |
                 (positions >= ctx - protected.num_recent))


def context_length_of(positions: jax.Array) -> jax.Array:
  """[batch] int32: one past the largest cached position of each row (the
  default context length; right as long as the newest token is cached)."""
  return (jnp.max(positions, axis=(1, 2)) + 1).astype(jnp.int32)


def _static_width(budget, max_budget, protected) -> int:
  """The static number of keep_idx columns for an int or per-head budget."""
  if isinstance(budget, (jax.Array, np.ndarray)):
    if not jnp.issubdtype(budget.dtype, jnp.integer):
      raise ValueError(f"budget must be a Python int or an integer array of "
                       f"per-head budgets, got a {budget.dtype} array")
    if max_budget is None:
      if isinstance(budget, jax.core.Tracer):
        raise ValueError("per-head budgets under jit need a static "
                         "max_budget= (the number of slots to keep at most)")
      max_budget = int(np.max(np.asarray(budget)))
    return check_budget(max_budget, protected, what="max_budget")
  budget = check_budget(budget, protected)
  if max_budget is not None and max_budget != budget:
    raise ValueError(f"max_budget={max_budget} differs from the int "
                     f"budget={budget}")
  return budget


def select_top(scores: jax.Array, positions: jax.Array, budget: Budget,
               protected: Protected,
               context_length: jax.Array | None = None, *,
               max_budget: int | None = None) -> jax.Array:
  """The slots each head keeps: protected slots, then the highest scores.

  The slots of a head are ordered by (protected first, score descending,
  position descending) and the first budget ones are kept: ties in score go
  to the newer token, so the kept set is the same for slots in any order.
  NaN scores count as -inf. Empty slots are never kept.

  Args:
    scores: [batch, kv_heads, slots] float, higher = keep (a Scorer's output).
    positions: [batch, kv_heads, slots] int32, -1 = empty.
    budget: tokens kept per head: a Python int (static), or per-head budgets,
      an int array [kv_heads] or [batch, kv_heads] (adaptive allocation).
      Protected slots count inside it.
    protected: the always-kept tokens (see keep_mask_protected).
    context_length: [batch] int32; by default one past the newest position.
    max_budget: with per-head budgets, the static number of columns (>= every
      budget); read from a concrete array when omitted, required under jit.
  Returns:
    keep_idx [batch, kv_heads, width] int32, width = budget (or max_budget):
    the kept slot indices in rank order (protected first, then by score),
    then NO_SLOT (-1) where a head keeps fewer tokens (its budget is smaller,
    or it holds fewer valid tokens than the budget).
  Raises:
    ValueError: a budget that is not an int or is below the protected
      set's size, or per-head budgets under jit without max_budget.
  """
  width = _static_width(budget, max_budget, protected)
  if context_length is None:
    context_length = context_length_of(positions)
  b, k, s = scores.shape
  valid = positions >= 0
  always = keep_mask_protected(positions, context_length, protected)
  score = jnp.where(jnp.isnan(scores), -jnp.inf, scores.astype(jnp.float32))
  iota = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, k, s))
  # Keys: valid first, protected first, score descending, newer first.
  _, _, _, _, order = jax.lax.sort(
      (~valid, ~always, -score, -positions, iota), dimension=2, num_keys=4)
  take = min(width, s)
  order = order[..., :take]                                       # [B, K, w']
  per_head = jnp.broadcast_to(jnp.asarray(budget, jnp.int32), (b, k))
  kept = (jnp.arange(take) < per_head[..., None]) & jnp.take_along_axis(
      valid, order, axis=2)
  keep_idx = jnp.where(kept, order, NO_SLOT).astype(jnp.int32)
  if take < width:
    keep_idx = jnp.pad(keep_idx, ((0, 0), (0, 0), (0, width - take)),
                       constant_values=NO_SLOT)
  return keep_idx


def kept_mask(keep_idx: jax.Array, slots: int) -> jax.Array:
  """[batch, kv_heads, slots] bool: the slots named in keep_idx [B, K, b]."""
  b, k, _ = keep_idx.shape
  idx = jnp.where(keep_idx >= 0, keep_idx, slots)        # NO_SLOT -> dropped.
  bi = jnp.arange(b)[:, None, None]
  ki = jnp.arange(k)[None, :, None]
  return jnp.zeros((b, k, slots), bool).at[bi, ki, idx].set(True, mode="drop")


def mask_evicted(layer_cache: LayerCache, keep_idx: jax.Array) -> LayerCache:
  """The same-size cache with every slot outside keep_idx marked empty.

  This is eviction emulated by masking (as the paper evaluates it): no memory
  is saved, but attention sees exactly the kept tokens. k, v and end are
  unchanged; pos is -1 on the evicted slots.

  Args:
    layer_cache: LayerCache with [batch, kv_heads, capacity, ...] arrays.
    keep_idx: [batch, kv_heads, b] int32 from select_top (-1 = none).
  """
  keep = kept_mask(keep_idx, layer_cache.capacity)
  return layer_cache.replace(
      pos=jnp.where(keep, layer_cache.pos, EMPTY_POSITION))


def compact(layer_cache: LayerCache, keep_idx: jax.Array,
            capacity: int) -> LayerCache:
  """A new cache of `capacity` slots holding only the kept entries.

  The kept tokens of each head go to slots 0..b-1 in ascending position
  order, right-aligned (empty slots first when a head keeps fewer than b);
  slots b..capacity-1 are empty and end = b, so appends start at slot b.
  Positions are unchanged (keys carry their RoPE, masks come from
  positions). See the module docstring for why the layout is right-aligned.

  Args:
    layer_cache: LayerCache with k, v [batch, kv_heads, S, head_dim].
    keep_idx: [batch, kv_heads, b] int32 slot indices, -1 = none (any order).
    capacity: slots of the new cache, a Python int >= b.
  Returns:
    LayerCache with k, v [batch, kv_heads, capacity, head_dim]; empty slots
    hold zeros and position -1.
  """
  width = keep_idx.shape[-1]
  if (isinstance(capacity, bool) or not isinstance(capacity, numbers.Integral)
      or capacity < width):
    raise ValueError(f"capacity={capacity!r} must be a Python int >= the "
                     f"budget {width} (the kept tokens must fit)")
  capacity = int(capacity)
  has = keep_idx >= 0
  slot = jnp.where(has, keep_idx, 0)                              # [B, K, b]
  pos = jnp.where(has, jnp.take_along_axis(layer_cache.pos, slot, axis=2),
                  EMPTY_POSITION)
  # Ascending positions: empty (-1) first, then the kept tokens oldest first.
  pos, slot = jax.lax.sort((pos, slot), dimension=2, num_keys=1)
  present = (pos >= 0)[..., None]
  pad = capacity - width

  def gather(x):                                  # [B, K, S, H] -> [B, K, C, H]
    kept = jnp.take_along_axis(x, slot[..., None], axis=2)
    kept = jnp.where(present, kept, jnp.zeros((), x.dtype))
    return jnp.pad(kept, ((0, 0), (0, 0), (0, pad), (0, 0)))

  return LayerCache(
      k=gather(layer_cache.k), v=gather(layer_cache.v),
      pos=jnp.pad(pos, ((0, 0), (0, 0), (0, pad)),
                  constant_values=EMPTY_POSITION).astype(jnp.int32),
      end=jnp.asarray(width, jnp.int32))


def evict_layer(layer_cache: LayerCache, scores: jax.Array, budget: Budget,
                capacity: int, protected: Protected,
                context_length: jax.Array | None = None, *,
                max_budget: int | None = None) -> LayerCache:
  """select_top then compact, for one layer.

  Args:
    layer_cache: the layer's cache, [batch, kv_heads, S, ...] arrays.
    scores: [batch, kv_heads, S] float, higher = keep.
    budget: int, or per-head int array [kv_heads] / [batch, kv_heads] with a
      static max_budget (see select_top).
    capacity: slots of the compacted cache (Python int >= the budget); the
      room beyond the budget is for the tokens appended afterwards.
    context_length: [batch] int32; by default one past the newest position.
  Returns:
    The compacted LayerCache, [batch, kv_heads, capacity, ...].
  """
  width = _static_width(budget, max_budget, protected)
  if (isinstance(capacity, bool) or not isinstance(capacity, numbers.Integral)
      or capacity < width):
    raise ValueError(f"capacity={capacity!r} must be a Python int >= the "
                     f"budget {width}")
  keep_idx = select_top(scores, layer_cache.pos, budget, protected,
                        context_length, max_budget=width)
  return compact(layer_cache, keep_idx, capacity)


def _per_layer(value, n: int, what: str) -> tuple:
  if isinstance(value, (list, tuple)):
    if len(value) != n:
      raise ValueError(f"{len(value)} {what} for {n} layers")
    return tuple(value)
  return (value,) * n


def evict(cache: KVCache, scores: Sequence[jax.Array], budgets,
          capacities: int | Sequence[int], protected: Protected,
          context_length: jax.Array | None = None) -> KVCache:
  """Evicts every layer of a KVCache down to its budget and compacts it.

  Jittable with budgets and capacities static (e.g. closed over, or
  `jax.jit(evict, static_argnames=("budgets", "capacities"))` for int ones).

  Args:
    cache: KVCache, layer l with [batch, kv_heads, S_l, ...] arrays.
    scores: one [batch, kv_heads, S_l] score array per layer.
    budgets: an int (uniform: every head of every layer keeps it), a sequence
      of ints (one per layer), or a `Budgets` from an allocator (per-head
      arrays with static per-layer widths).
    capacities: slots of each compacted layer, an int or one per layer
      (>= the layer's budget; see eviction_capacities).
    protected: the always-kept tokens.
    context_length: [batch] int32 tokens seen; by default one past the newest
      cached position of each row.
  Returns:
    The compacted KVCache.
  """
  n = cache.num_layers
  if len(scores) != n:
    raise ValueError(f"{len(scores)} score arrays for {n} layers")
  if isinstance(budgets, Budgets):
    per_layer = tuple(budgets.per_head)
    widths = tuple(budgets.widths)
  else:
    per_layer = _per_layer(budgets, n, "budgets")
    widths = (None,) * n
  caps = _per_layer(capacities, n, "capacities")
  if context_length is None:
    context_length = jnp.max(jnp.stack(
        [context_length_of(layer.pos) for layer in cache.layers]), axis=0)
  layers = tuple(
      evict_layer(layer, s, b, c, protected, context_length, max_budget=w)
      for layer, s, b, c, w in zip(cache.layers, scores, per_layer, caps,
                                   widths))
  return KVCache(layers=layers)


def eviction_capacities(config, budgets: int | Sequence[int],
                        room: int) -> tuple[int, ...]:
  """Per-layer capacities for a compacted cache that must take `room` more
  tokens without evicting again.

  A global layer needs budget + room slots. A sliding-window layer needs no
  more than max(budget, window): with the compacted layout a slot is reused
  only after its token left the window.

  Args:
    config: DecoderConfig.
    budgets: the static budget (width) of each layer, or one for all.
    room: tokens to be appended after the eviction.
  """
  widths = _per_layer(budgets, config.num_layers, "budgets")
  caps = []
  for layer, width in enumerate(widths):
    need = width + room
    window = config.layer_window(layer)
    caps.append(need if window is None else max(width, min(need, window)))
  return tuple(caps)
