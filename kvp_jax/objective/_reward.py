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

Beyond the paper, the budgets may be weighted (`BudgetWeighting`, for the
ablations of which budgets the reward should care about): with weight w_b
on budget b,

    cost_w(sigma) = sum_b w_b sum_{i > b} I_{sigma_i} = sum_i W(i) I_{sigma_i},
    W(i) = sum_{b < i} w_b,

"uniform" (the paper) w_b = 1, W(i) = i; "truncated" w_b = 1 for b <=
max_budget, else 0, W(i) = min(i, max_budget + 1); "harmonic" w_b = 1 / (b +
1), W(i) = H_i (the i-th harmonic number), which weighs every halving of the
budget about equally. W is non-decreasing in all three, so descending
importance stays the oracle (rearrangement inequality).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from kvp_jax.objective._plackett_luce import deterministic_order

# Below this oracle cost the ranking problem is degenerate (all I ~ 0).
_TINY = float(jnp.finfo(jnp.float32).tiny)


WEIGHTINGS = ("uniform", "truncated", "harmonic")


@dataclasses.dataclass(frozen=True)
class BudgetWeighting:
  """Which budgets the ranking cost sums over, and with what weight.

  Attributes:
    kind: "uniform" (every budget 0..n-1, the paper), "truncated" (budgets
      <= max_budget only) or "harmonic" (budget b weighted 1 / (b + 1)).
    max_budget: the largest budget "truncated" counts. Budgets here count
      the ranked tokens only: the protected sinks and recent tokens come on
      top (max_budget 512 with 4 + 16 protected is a cache of 532).
  """
  kind: str = "uniform"
  max_budget: int = 512

  def __post_init__(self):
    if self.kind not in WEIGHTINGS:
      raise ValueError(f"budget weighting {self.kind!r}: must be one of "
                       f"{', '.join(WEIGHTINGS)}")
    if self.max_budget < 1:
      raise ValueError(f"budget weighting max_budget={self.max_budget}: must "
                       "be >= 1")

  def rank_weight(self, rank: jax.Array) -> jax.Array:
    """W(rank) = sum_{b < rank} w_b for 1-indexed ranks (float, >= 1)."""
    rank = rank.astype(jnp.float32)
    if self.kind == "truncated":
      return jnp.minimum(rank, float(self.max_budget + 1))
    if self.kind == "harmonic":
      return _harmonic(rank)
    return rank

  def mean_rank_weight(self, n: jax.Array) -> jax.Array:
    """(1 / n) sum_{i=1..n} W(i): a uniformly random ranking's mean weight
    ((n + 1) / 2 for "uniform"); 0 where n = 0."""
    n = n.astype(jnp.float32)
    safe = jnp.maximum(n, 1.0)
    if self.kind == "truncated":
      c = float(self.max_budget + 1)
      total = jnp.where(n <= c, 0.5 * n * (n + 1.0),
                        0.5 * c * (c + 1.0) + (n - c) * c)
    elif self.kind == "harmonic":   # sum_{i<=n} H_i = (n + 1) H_n - n.
      total = (n + 1.0) * _harmonic(n) - n
    else:
      total = 0.5 * n * (n + 1.0)
    return jnp.where(n > 0, total / safe, 0.0)


UNIFORM = BudgetWeighting()


def _harmonic(x: jax.Array) -> jax.Array:
  """H_x = digamma(x + 1) + Euler's gamma (H_0 = 0, H_1 = 1)."""
  return jax.scipy.special.digamma(x + 1.0) + np.float32(np.euler_gamma)


def _sorted_by_order(order: jax.Array, importance: jax.Array,
                     valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(importance, valid) permuted by `order`, importance 0 where invalid."""
  importance = importance.astype(jnp.float32)
  valid = valid.astype(bool)
  v = jnp.take_along_axis(valid, order, axis=-1)
  imp = jnp.take_along_axis(importance, order, axis=-1)
  return jnp.where(v, imp, 0.0), v


def ranking_cost(order: jax.Array, importance: jax.Array,
                 valid: jax.Array,
                 weighting: BudgetWeighting = UNIFORM) -> jax.Array:
  """sum_i W(i) * I_{sigma_i} over valid items, i = 1-indexed rank among
  them (W(i) = i: the paper's all-budget cost).

  Args:
    order: [..., P] int, a permutation (item ranked first at index 0).
    importance: [..., P] float, non-negative.
    valid: [..., P] bool, indexed like `importance`. Invalid items may sit
      anywhere in `order`; they do not take up a rank.
    weighting: which budgets count (module docstring).
  Returns:
    [...] float32.
  """
  imp, v = _sorted_by_order(order, importance, valid)
  rank = jnp.cumsum(v.astype(jnp.float32), axis=-1)           # [..., P]
  return jnp.sum(weighting.rank_weight(rank) * imp, axis=-1)


def oracle_cost(importance: jax.Array, valid: jax.Array,
                weighting: BudgetWeighting = UNIFORM) -> jax.Array:
  """The smallest ranking cost: that of descending importance. [...] float32."""
  return ranking_cost(deterministic_order(importance, valid), importance, valid,
                      weighting)


def _safe_ratio(cost: jax.Array, oracle: jax.Array) -> jax.Array:
  ok = oracle > _TINY
  return jnp.where(ok, cost / jnp.where(ok, oracle, 1.0), 1.0)


def normalised_cost(order: jax.Array, importance: jax.Array,
                    valid: jax.Array,
                    weighting: BudgetWeighting = UNIFORM) -> jax.Array:
  """cost(order) / cost(oracle) >= 1; exactly 1 when the oracle cost is ~0.

  Args: as `ranking_cost`. Returns: [...] float32.
  """
  return _safe_ratio(ranking_cost(order, importance, valid, weighting),
                     oracle_cost(importance, valid, weighting))


def reward(order: jax.Array, importance: jax.Array,
           valid: jax.Array,
           weighting: BudgetWeighting = UNIFORM) -> jax.Array:
  """-normalised_cost: <= -1, and -1 exactly at the oracle. [...] float32."""
  return -normalised_cost(order, importance, valid, weighting)


def expected_random_cost(importance: jax.Array, valid: jax.Array,
                         weighting: BudgetWeighting = UNIFORM) -> jax.Array:
  """E[cost] of a uniformly random ranking: mean W over ranks 1..n times
  the sum of I ((n + 1) / 2 * sum of I for the paper's cost).

  Every rank is equally likely for every item. Args: importance [..., P],
  valid [..., P]. Returns: [...] float32.
  """
  importance = jnp.where(valid, importance.astype(jnp.float32), 0.0)
  n = jnp.sum(valid.astype(jnp.float32), axis=-1)
  return weighting.mean_rank_weight(n) * jnp.sum(importance, axis=-1)


def random_normalised_cost(importance: jax.Array, valid: jax.Array,
                           weighting: BudgetWeighting = UNIFORM) -> jax.Array:
  """E[cost of a random ranking] / oracle cost: the random baseline. [...]."""
  return _safe_ratio(expected_random_cost(importance, valid, weighting),
                     oracle_cost(importance, valid, weighting))


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
