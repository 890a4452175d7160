"""The Plackett-Luce policy over rankings of the cached tokens.

Method section 4 (arXiv 2602.10238). Given scores s over P items, the
Plackett-Luce distribution picks the item to rank first with probability
softmax(s), the next one by softmax over the remaining items, and so on:

    log pi(sigma) = sum_i [ s_{sigma_i} - logsumexp_{l >= i} s_{sigma_l} ]

Sampling it exactly is a Gumbel-sort: sigma = argsort(s + g, descending),
g_i ~ Gumbel(0, 1) i.i.d.

Padding: items with valid=False are not part of the ranking. Samplers put
them last; `log_prob` ignores them wherever they sit in `order` (they are
left out of every logsumexp), so it is the log-probability of the ranking of
the valid items. Everything is float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Stands in for -inf in the reverse logsumexp: exp(_NEG - s) is exactly 0 in
# float32 for any reasonable score, and it keeps gradients free of inf - inf.
_NEG = -1e30


def _sort_descending(keys: jax.Array, valid: jax.Array) -> jax.Array:
  """Indices sorting valid items by descending key, invalid items last.

  Ties (and the invalid tail) keep index order. A valid item whose key is
  -inf still comes before every invalid item.
  """
  iota = jax.lax.broadcasted_iota(jnp.int32, keys.shape, keys.ndim - 1)
  invalid = jnp.logical_not(valid).astype(jnp.int32)
  _, _, order = jax.lax.sort((invalid, -keys, iota), dimension=-1,
                             is_stable=True, num_keys=2)
  return order


def gumbel_sort(key: jax.Array, scores: jax.Array, valid: jax.Array,
                num_samples: int | None = None) -> jax.Array:
  """Samples rankings from PL(scores): argsort(scores + Gumbel), descending.

  Args:
    key: PRNG key.
    scores: [..., P] float (cast to float32).
    valid: [..., P] bool; invalid items are placed last.
    num_samples: None for one ranking per score vector; K for K independent
      rankings, stacked on a new axis just before P.
  Returns:
    orders: [..., P] int32, or [..., K, P] when num_samples=K. orders[..., i]
    is the index of the item ranked i-th (0 = keep first, evict last).
  """
  scores = scores.astype(jnp.float32)
  valid = valid.astype(bool)
  if num_samples is not None:
    shape = scores.shape[:-1] + (num_samples, scores.shape[-1])
    scores = jnp.broadcast_to(scores[..., None, :], shape)
    valid = jnp.broadcast_to(valid[..., None, :], shape)
  noise = jax.random.gumbel(key, scores.shape, jnp.float32)
  perturbed = jnp.where(valid, scores + noise, -jnp.inf)
  return _sort_descending(perturbed, valid)


def deterministic_order(scores: jax.Array, valid: jax.Array) -> jax.Array:
  """The mode of PL(scores): argsort(scores) descending, invalid items last.

  Args:
    scores: [..., P] float.
    valid: [..., P] bool.
  Returns:
    orders: [..., P] int32 (ties keep index order).
  """
  scores = scores.astype(jnp.float32)
  valid = valid.astype(bool)
  return _sort_descending(jnp.where(valid, scores, -jnp.inf), valid)


def log_prob(scores: jax.Array, order: jax.Array,
             valid: jax.Array) -> jax.Array:
  """Exact Plackett-Luce log-probability of a ranking of the valid items.

    log pi(sigma) = sum_{valid i} [s_{sigma_i}
                                   - logsumexp_{valid l >= i} s_{sigma_l}]

  computed with a stable reverse cumulative logsumexp, float32.

  Args:
    scores: [..., P] float (invalid entries may be -inf).
    order: [..., P] int, a permutation of 0..P-1 on the last axis.
    valid: [..., P] bool, indexed like `scores` (not like `order`).
  Returns:
    [...] float32 log-probabilities; 0 where nothing is valid.
  """
  scores = scores.astype(jnp.float32)
  valid = valid.astype(bool)
  s = jnp.take_along_axis(scores, order, axis=-1)              # [..., P]
  v = jnp.take_along_axis(valid, order, axis=-1)               # [..., P]
  s = jnp.where(v, s, _NEG)
  tail = jax.lax.cumlogsumexp(s, axis=s.ndim - 1, reverse=True)  # [..., P]
  return jnp.sum(jnp.where(v, s - tail, 0.0), axis=-1)
