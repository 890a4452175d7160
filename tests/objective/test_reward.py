"""The normalised all-budget reward vs brute-force enumeration."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import objective


def _np_evicted_per_budget(order, importance, valid):
  """Importance evicted at budget b = 0..P-1, by direct counting."""
  ranked = [j for j in order if valid[j]]            # Valid items, by rank.
  p = len(order)
  return np.array([sum(importance[j] for j in ranked[b:]) for b in range(p)],
                  np.float64)


def _all_orders(valid, pad_first=False):
  valid_idx = np.flatnonzero(valid).tolist()
  pad_idx = np.flatnonzero(~valid).tolist()
  orders = []
  for perm in itertools.permutations(valid_idx):
    orders.append(pad_idx + list(perm) if pad_first else list(perm) + pad_idx)
  return np.array(orders, np.int32)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_oracle_reward_is_minus_one_and_every_other_order_is_worse(n):
  rng = np.random.default_rng(n)
  p = n + 2
  valid = np.zeros(p, bool)
  valid[rng.permutation(p)[:n]] = True
  importance = rng.permutation(np.arange(1, p + 1)).astype(np.float32) / p
  importance[~valid] = 100.0  # Padding importance must not count.
  oracle = np.asarray(objective.deterministic_order(importance, valid))
  orders = _all_orders(valid)
  rewards = np.asarray(objective.reward(orders, importance[None], valid[None]))
  assert rewards.shape == (len(orders),)
  r_oracle = objective.reward(oracle, importance, valid)
  np.testing.assert_array_equal(r_oracle, -1.0)
  is_oracle = np.all(orders[:, :n] == oracle[:n], axis=1)
  assert is_oracle.sum() == 1
  np.testing.assert_array_equal(rewards[is_oracle], -1.0)
  assert np.all(rewards[~is_oracle] < -1.0)


@pytest.mark.parametrize("n", [3, 6])
def test_reward_is_normalised_evicted_mass_summed_over_budgets(n):
  rng = np.random.default_rng(10 + n)
  p = n + 3
  valid = np.zeros(p, bool)
  valid[rng.permutation(p)[:n]] = True
  importance = rng.exponential(size=p).astype(np.float32)
  orders = _all_orders(valid)
  # Also place the padding first and in the middle: it takes no rank.
  orders = np.concatenate([orders, _all_orders(valid, pad_first=True)])
  oracle_order = np.argsort(-np.where(valid, importance, -np.inf),
                            kind="stable")
  oracle_mass = _np_evicted_per_budget(oracle_order, importance, valid).sum()

  evicted = np.asarray(objective.evicted_mass_per_budget(
      orders, importance[None], valid[None]))
  costs = np.asarray(objective.ranking_cost(orders, importance[None],
                                            valid[None]))
  rewards = np.asarray(objective.reward(orders, importance[None], valid[None]))
  assert evicted.shape == orders.shape
  for o, e, c, r in zip(orders, evicted, costs, rewards):
    ref = _np_evicted_per_budget(o, importance, valid)
    np.testing.assert_allclose(e, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(e[n:], 0.0, atol=0)
    np.testing.assert_allclose(c, ref.sum(), rtol=1e-5)
    np.testing.assert_allclose(r, -ref.sum() / oracle_mass, rtol=1e-5)
  np.testing.assert_allclose(
      objective.oracle_cost(importance, valid), oracle_mass, rtol=1e-5)


def test_ranking_cost_brute_force_batched():
  rng = np.random.default_rng(5)
  importance = rng.uniform(size=(3, 4, 9)).astype(np.float32)
  valid = rng.uniform(size=(3, 4, 9)) < 0.7
  orders = np.argsort(rng.uniform(size=(3, 4, 9)), -1).astype(np.int32)
  costs = np.asarray(objective.ranking_cost(orders, importance, valid))
  assert costs.shape == (3, 4)
  for idx in np.ndindex(3, 4):
    ranked = [j for j in orders[idx] if valid[idx][j]]
    ref = sum((i + 1) * importance[idx][j] for i, j in enumerate(ranked))
    np.testing.assert_allclose(costs[idx], ref, rtol=1e-5)


@pytest.mark.parametrize("n", [2, 4, 6])
def test_expected_random_cost_is_the_mean_over_all_orders(n):
  rng = np.random.default_rng(20 + n)
  valid = np.ones(n + 1, bool)
  valid[0] = False
  importance = rng.exponential(size=n + 1).astype(np.float32)
  orders = _all_orders(valid)
  mean_cost = np.asarray(objective.ranking_cost(
      orders, importance[None], valid[None])).astype(np.float64).mean()
  np.testing.assert_allclose(
      objective.expected_random_cost(importance, valid), mean_cost, rtol=1e-5)
  np.testing.assert_allclose(
      objective.random_normalised_cost(importance, valid),
      mean_cost / objective.oracle_cost(importance, valid), rtol=1e-5)


def test_degenerate_problems_have_normalised_cost_one():
  order = jnp.array([2, 0, 1, 3], jnp.int32)
  zero = jnp.zeros(4)
  ones = jnp.ones(4, bool)
  np.testing.assert_array_equal(
      objective.normalised_cost(order, zero, ones), 1.0)
  np.testing.assert_array_equal(
      objective.normalised_cost(order, jnp.ones(4), jnp.zeros(4, bool)), 1.)
  # Ties in importance: every order of the tied items is optimal.
  tied = jnp.array([1.0, 1.0, 1.0, 0.0])
  np.testing.assert_allclose(
      objective.reward(jnp.array([2, 1, 0, 3]), tied, ones), -1.0, atol=0)


def test_reward_is_scale_invariant():
  rng = np.random.default_rng(7)
  importance = rng.exponential(size=(5, 12)).astype(np.float32)
  valid = np.ones((5, 12), bool)
  orders = np.argsort(rng.uniform(size=(5, 12)), -1).astype(np.int32)
  r1 = objective.reward(orders, importance, valid)
  r2 = objective.reward(orders, importance * 1e-6, valid)
  assert np.all(np.asarray(r1) < -1.0)
  np.testing.assert_allclose(r1, r2, rtol=1e-5)
