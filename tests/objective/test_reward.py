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


def _np_budget_weights(kind, p, max_budget):
  """w_b for b = 0..p-1, written from the definition (not from W)."""
  b = np.arange(p, dtype=np.float64)
  if kind == "uniform":
    return np.ones(p)
  if kind == "truncated":
    return (b <= max_budget).astype(np.float64)
  return 1.0 / (b + 1.0)


@pytest.mark.parametrize("kind,max_budget", [("uniform", 512),
                                             ("truncated", 1),
                                             ("truncated", 2),
                                             ("harmonic", 512)])
def test_weighted_cost_is_the_weighted_sum_of_evicted_mass(kind, max_budget):
  """Every order of 5 valid items among 7: the weighted cost is
  sum_b w_b * (importance evicted at b), the oracle is the smallest over all
  orders, and a random ranking's expected cost is the mean over orders."""
  rng = np.random.default_rng(7)
  p, n = 7, 5
  valid = np.zeros(p, bool)
  valid[rng.permutation(p)[:n]] = True
  importance = rng.gamma(0.5, size=p).astype(np.float32)
  weighting = objective.BudgetWeighting(kind, max_budget)
  orders = _all_orders(valid)
  w = _np_budget_weights(kind, p, max_budget)
  expected = np.array([w @ _np_evicted_per_budget(o, importance, valid)
                       for o in orders])
  got = np.asarray(objective.ranking_cost(orders, importance[None],
                                          valid[None], weighting))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  oracle = float(objective.oracle_cost(importance, valid, weighting))
  np.testing.assert_allclose(oracle, expected.min(), rtol=1e-5)
  np.testing.assert_allclose(
      float(objective.expected_random_cost(importance, valid, weighting)),
      expected.mean(), rtol=1e-5)
  norm = np.asarray(objective.normalised_cost(orders, importance[None],
                                              valid[None], weighting))
  np.testing.assert_allclose(norm, expected / expected.min(), rtol=1e-5)


def test_truncated_cost_ignores_budgets_past_the_cut():
  """Reordering items ranked past max_budget + 1 changes no truncated cost,
  while the paper's cost sees it."""
  importance = jnp.asarray([5.0, 4.0, 3.0, 2.0, 1.0])
  valid = jnp.ones(5, bool)
  a, b = jnp.asarray([0, 1, 2, 3, 4]), jnp.asarray([0, 1, 4, 3, 2])
  cut = objective.BudgetWeighting("truncated", 1)
  assert float(objective.ranking_cost(a, importance, valid, cut)) == float(
      objective.ranking_cost(b, importance, valid, cut))
  assert float(objective.ranking_cost(a, importance, valid)) < float(
      objective.ranking_cost(b, importance, valid))


def test_mean_rank_weight_closed_forms_match_sums():
  for kind in objective.WEIGHTINGS:
    weighting = objective.BudgetWeighting(kind, 3)
    for n in range(0, 12):
      ranks = jnp.arange(1, n + 1, dtype=jnp.float32)
      want = float(jnp.mean(weighting.rank_weight(ranks))) if n else 0.0
      got = float(weighting.mean_rank_weight(jnp.float32(n)))
      assert got == pytest.approx(want, rel=1e-5, abs=1e-6), (kind, n)


def test_bad_weighting_is_refused():
  with pytest.raises(ValueError, match="must be one of uniform"):
    objective.BudgetWeighting("small")
  with pytest.raises(ValueError, match="max_budget=0: must be >= 1"):
    objective.BudgetWeighting("truncated", 0)
  from kvp_jax import training  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="config.train.reward_budgets"):
    training.TrainConfig(reward_budgets="small")
