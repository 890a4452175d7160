"""Slots in position order: cached slots are not sorted after eviction, so
rules that depend on token order sort by position and scatter back."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class SlotOrder(NamedTuple):
  """The position order of one layer's slots.

  order: [batch, kv_heads, slots] int32, slot indices sorted by position,
    valid slots first (ascending position), then the empty ones.
  rank: [batch, kv_heads, slots] int32, each slot's index in that order (the
    inverse permutation): 0 for the oldest token; >= count for empty slots.
  count: [batch, kv_heads] int32, the number of valid slots.
  """
  order: jax.Array
  rank: jax.Array
  count: jax.Array


def slot_order(positions: jax.Array) -> SlotOrder:
  """SlotOrder of positions [batch, kv_heads, slots] (-1 = empty)."""
  valid = positions >= 0
  key = jnp.where(valid, positions, jnp.iinfo(jnp.int32).max)
  order = jnp.argsort(key, axis=-1, stable=True).astype(jnp.int32)
  rank = jnp.argsort(order, axis=-1).astype(jnp.int32)
  count = jnp.sum(valid, axis=-1, dtype=jnp.int32)
  return SlotOrder(order, rank, count)


def gather_slots(x: jax.Array, index: jax.Array) -> jax.Array:
  """x[b, k, index[b, k, i]] for x [B, K, S] or [B, K, S, H]."""
  if x.ndim == index.ndim + 1:
    index = index[..., None]
  return jnp.take_along_axis(x, index, axis=2)


def to_sorted(x: jax.Array, so: SlotOrder) -> jax.Array:
  """Slot-ordered [B, K, S(, H)] -> position-ordered."""
  return gather_slots(x, so.order)


def from_sorted(x: jax.Array, so: SlotOrder) -> jax.Array:
  """Position-ordered [B, K, S(, H)] -> back in the slots' order."""
  return gather_slots(x, so.rank)


def rank_descending(score: jax.Array, tiebreak: jax.Array,
                    valid: jax.Array) -> jax.Array:
  """0 for the highest score among valid slots, 1 for the next, ...

  Args:
    score, tiebreak: [B, K, S]; ties in score go to the higher tiebreak.
    valid: [B, K, S] bool; invalid slots rank after every valid one.
  Returns:
    [B, K, S] int32 ranks (a permutation of 0..S-1 per row).
  """
  s = jnp.shape(score)[-1]
  iota = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), score.shape)
  _, _, _, order = jax.lax.sort(
      (~valid, -score, -tiebreak, iota), dimension=2, num_keys=3)
  return jnp.argsort(order, axis=-1).astype(jnp.int32)
