"""The all-budget eviction reward, normalised by the oracle ranking.

Method section 4 (arXiv 2602.10238). A ranking sigma keeps its first b items
at budget b and evicts the rest. The importance I_j >= 0 is the future
attention token j would have received (method section 2). The cost of a
ranking is the importance it evicts, summed over every budget b = 0..n-1:

    cost(sigma) = sum_b sum_{i > b} I_{sigma_i} = sum_i i * I_{sigma_i}

(i the 1-indexed rank among the n valid items). The oracle sigma* sorts by
descending importance and minimises the cost, so

    normalised_cost = cost(sigma) / cost(sigma*) >= 1
    reward = -normalised_cost <= -1

with reward = -1 exactly at the oracle. When every importance is 0 (or no
item is valid) every ranking is optimal and the normalised cost is defined
as 1. Everything is float32; importance must be non-negative.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kvp_jax.objective._plackett_luce import deterministic_order

# Below this oracle cost the ranking problem is degenerate (all I ~ 0).
_TINY = float(jnp.finfo(jnp.float32).tiny)


def _sorted_by_order(order: jax.Array, importance: jax.Array,
                     valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(importance, valid) permuted by `order`, importance 0 where invalid."""
  importance = importance.astype(jnp.float32)
  valid = valid.astype(bool)
  v = jnp.take_along_axis(valid, order, axis=-1)
  imp = jnp.take_along_axis(importance, order, axis=-1)
  return jnp.where(v, imp, 0.0), v


def ranking_cost(order: jax.Array, importance: jax.Array,
                 valid: jax.Array) -> jax.Array:
  """sum_i i * I_{sigma_i} over valid items, i = 1-indexed rank among them.

  Args:
    order: [..., P] int, a permutation (item ranked first at index 0).
    importance: [..., P] float, non-negative.
    valid: [..., P] bool, indexed like `importance`. Invalid items may sit
      anywhere in `order`; they do not take up a rank.
  Returns:
    [...] float32.
  """
  imp, v = _sorted_by_order(order, importance, valid)
  rank = jnp.cumsum(v.astype(jnp.float32), axis=-1)           # [..., P]
  return jnp.sum(rank * imp, axis=-1)


def oracle_cost(importance: jax.Array, valid: jax.Array) -> jax.Array:
  """The smallest ranking cost: that of descending importance. [...] float32."""
  return ranking_cost(deterministic_order(importance, valid), importance, valid)


def _safe_ratio(cost: jax.Array, oracle: jax.Array) -> jax.Array:
  ok = oracle > _TINY
  return jnp.where(ok, cost / jnp.where(ok, oracle, 1.0), 1.0)


def normalised_cost(order: jax.Array, importance: jax.Array,
                    valid: jax.Array) -> jax.Array:
  """cost(order) / cost(oracle) >= 1; exactly 1 when the oracle cost is ~0.

  Args: as `ranking_cost`. Returns: [...] float32.
  """
  return _safe_ratio(ranking_cost(order, importance, valid),
                     oracle_cost(importance, valid))


def reward(order: jax.Array, importance: jax.Array,
           valid: jax.Array) -> jax.Array:
  """-normalised_cost: <= -1, and -1 exactly at the oracle. [...] float32."""
  return -normalised_cost(order, importance, valid)


def expected_random_cost(importance: jax.Array, valid: jax.Array) -> jax.Array:
  """E[cost] of a uniformly random ranking: (n + 1) / 2 * sum of I.

  Every item's expected rank is (n + 1) / 2. Args: importance [..., P],
  valid [..., P]. Returns: [...] float32.
  """
  importance = jnp.where(valid, importance.astype(jnp.float32), 0.0)
  n = jnp.sum(valid.astype(jnp.float32), axis=-1)
  return 0.5 * (n + 1.0) * jnp.sum(importance, axis=-1)


def random_normalised_cost(importance: jax.Array,
                           valid: jax.Array) -> jax.Array:
  """E[cost of a random ranking] / oracle cost: the random baseline. [...]."""
  return _safe_ratio(expected_random_cost(importance, valid),
                     oracle_cost(importance, valid))


def evicted_mass_per_budget(order: jax.Array, importance: jax.Array,
                            valid: jax.Array) -> jax.Array:
  """Importance evicted at every budget when keeping the first b of `order`.

  Args: as `ranking_cost`.
  Returns:
    [..., P] float32: entry b (b = 0..P-1) is the total importance of the
    valid items whose rank among the valid items is > b (1-indexed), i.e.
    what budget b evicts; entries b >= n (the number of valid items) are 0.
    Its sum over b equals `ranking_cost`.
  """
  imp, v = _sorted_by_order(order, importance, valid)
  # Move the invalid items to the end, keeping the ranking of the valid ones.
  _, compact = jax.lax.sort((jnp.logical_not(v).astype(jnp.int32), imp),
                            dimension=-1, is_stable=True, num_keys=1)
  # Reverse cumulative sum: entry b = sum over ranks b+1..n.
  return jnp.flip(jnp.cumsum(jnp.flip(compact, -1), axis=-1), -1)
