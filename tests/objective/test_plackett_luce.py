"""Plackett-Luce log-probabilities and Gumbel-sort sampling vs brute force."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import objective


def _key(seed):
  # rbg keys compile ~8x faster than threefry on CPU; the code under test
  # takes any key (one Gumbel test below keeps the default threefry).
  return jax.random.key(seed, impl="rbg")


def _np_pl_prob(scores, perm):
  """Product of softmaxes over the remaining items, float64."""
  s = np.asarray(scores, np.float64)
  p = 1.0
  for i, j in enumerate(perm):
    rest = s[list(perm[i:])]
    m = rest.max()
    p *= np.exp(s[j] - m) / np.exp(rest - m).sum()
  return p


def _np_pl_logprob(scores, perm):
  s = np.asarray(scores, np.float64)
  total = 0.0
  for i, j in enumerate(perm):
    rest = s[list(perm[i:])]
    m = rest.max()
    total += s[j] - (m + np.log(np.exp(rest - m).sum()))
  return total


def _np_pl_grad(scores, perm):
  """d log pi(perm) / d scores, float64: sum_i e_{perm_i} - softmax(rest)."""
  s = np.asarray(scores, np.float64)
  g = np.zeros_like(s)
  for i, j in enumerate(perm):
    rest = list(perm[i:])
    w = np.exp(s[rest] - s[rest].max())
    g[j] += 1.0
    g[rest] -= w / w.sum()
  return g


def _problem(rng, n, num_pad):
  """Random scores over n valid + num_pad invalid items at random slots."""
  p = n + num_pad
  slots = rng.permutation(p)
  valid_idx = np.sort(slots[:n])
  pad_idx = slots[n:]
  scores = rng.normal(size=p) * 2.0
  scores[pad_idx] = 30.0  # Large: any leak into a logsumexp would show.
  valid = np.zeros(p, bool)
  valid[valid_idx] = True
  return scores.astype(np.float32), valid, valid_idx, pad_idx


@pytest.mark.parametrize("num_pad", [0, 2])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_log_prob_matches_brute_force_and_sums_to_one(n, num_pad):
  rng = np.random.default_rng(100 * n + num_pad)
  scores, valid, valid_idx, pad_idx = _problem(rng, n, num_pad)
  perms = list(itertools.permutations(valid_idx.tolist()))
  # Invalid items go last here (as the samplers place them).
  orders = np.array([list(p) + pad_idx.tolist() for p in perms], np.int32)
  lp = objective.log_prob(jnp.asarray(scores)[None], jnp.asarray(orders),
                          jnp.asarray(valid)[None])
  assert lp.shape == (len(perms),) and lp.dtype == jnp.float32
  probs = np.exp(np.asarray(lp, np.float64))
  expected = np.array([_np_pl_prob(scores, p) for p in perms])
  np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-5)
  np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-7)


def test_invalid_items_are_ignored_wherever_they_sit_in_the_order():
  rng = np.random.default_rng(0)
  scores, valid, valid_idx, pad_idx = _problem(rng, 5, 3)
  perm = rng.permutation(valid_idx).tolist()
  last = np.array(perm + pad_idx.tolist(), np.int32)
  mixed = np.array([pad_idx[0]] + perm[:2] + [pad_idx[1]] + perm[2:]
                   + [pad_idx[2]], np.int32)
  for s in (scores, np.where(valid, scores, -np.inf).astype(np.float32)):
    lp_last = objective.log_prob(s, last, valid)
    lp_mixed = objective.log_prob(s, mixed, valid)
    np.testing.assert_allclose(lp_last, _np_pl_logprob(scores, perm),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lp_mixed, lp_last, rtol=1e-6, atol=1e-6)


def test_nothing_valid_gives_log_prob_zero():
  lp = objective.log_prob(jnp.zeros(4), jnp.arange(4), jnp.zeros(4, bool))
  np.testing.assert_array_equal(lp, 0.0)


def test_log_prob_is_stable_for_large_scores():
  rng = np.random.default_rng(1)
  scores = (rng.normal(size=64) * 1000.0).astype(np.float32)
  valid = np.ones(64, bool)
  valid[-5:] = False
  perm = rng.permutation(np.flatnonzero(valid)).tolist()
  order = np.array(perm + np.flatnonzero(~valid).tolist(), np.int32)
  lp = objective.log_prob(scores, order, valid)
  expected = _np_pl_logprob(scores, perm)
  assert np.isfinite(lp)
  np.testing.assert_allclose(lp, expected, rtol=1e-5)


def test_log_prob_gradient_matches_analytic_and_is_finite_with_padding():
  rng = np.random.default_rng(2)
  scores, valid, valid_idx, pad_idx = _problem(rng, 6, 3)
  scores = np.where(valid, scores, -np.inf).astype(np.float32)  # As agents.
  perm = rng.permutation(valid_idx).tolist()
  order = np.array(perm + pad_idx.tolist(), np.int32)
  grad = jax.jit(jax.grad(objective.log_prob))(jnp.asarray(scores), order,
                                               valid)
  assert np.all(np.isfinite(grad))
  np.testing.assert_array_equal(np.asarray(grad)[~valid], 0.0)
  s64 = np.where(valid, scores, 0.0)
  np.testing.assert_allclose(grad, _np_pl_grad(s64, perm), atol=1e-5)


def test_gumbel_sort_frequencies_match_plackett_luce():
  scores = np.array([1.0, 0.0, -0.7], np.float32)
  valid = np.ones(3, bool)
  num = 60_000
  orders = objective.gumbel_sort(jax.random.key(0), scores, valid,
                                 num_samples=num)
  assert orders.shape == (num, 3) and orders.dtype == jnp.int32
  perms = list(itertools.permutations(range(3)))
  codes = np.asarray(orders) @ np.array([9, 3, 1])
  observed = np.array([(codes == 9 * a + 3 * b + c).sum() for a, b, c in perms])
  assert observed.sum() == num
  expected = num * np.array([_np_pl_prob(scores, p) for p in perms])
  chi2 = ((observed - expected) ** 2 / expected).sum()
  assert chi2 < 20.5, (chi2, observed, expected)  # df=5, p=0.001.


def test_gumbel_sort_puts_invalid_items_last_and_samples_valid_ones_by_pl():
  scores = np.array([0.5, 9.0, -1.0, 0.0], np.float32)
  valid = np.array([True, False, True, True])
  num = 30_000
  orders = np.asarray(objective.gumbel_sort(_key(1), scores, valid,
                                            num_samples=num))
  np.testing.assert_array_equal(orders[:, -1], 1)
  first = np.bincount(orders[:, 0], minlength=4) / num
  w = np.exp(np.where(valid, scores, -np.inf))
  np.testing.assert_allclose(first, w / w.sum(), atol=0.015)


def test_gumbel_sort_shapes_and_permutations():
  key = _key(3)
  scores = jax.random.normal(key, (2, 3, 7))
  valid = jnp.arange(7) < jnp.array([7, 4, 0])[:, None]        # [3, 7]
  valid = jnp.broadcast_to(valid, (2, 3, 7))
  one = objective.gumbel_sort(key, scores, valid)
  many = objective.gumbel_sort(key, scores, valid, num_samples=5)
  assert one.shape == (2, 3, 7)
  assert many.shape == (2, 3, 5, 7)
  many = np.asarray(many)
  np.testing.assert_array_equal(np.sort(many, -1),
                                np.broadcast_to(np.arange(7), many.shape))
  # The 4 valid items of row 1 come first, in some order.
  assert np.all(np.sort(many[:, 1, :, :4], -1) == np.arange(4))
  assert len({tuple(o) for o in many[0, 0]}) > 1  # Samples differ.


def test_deterministic_order_sorts_descending_with_ties_by_index():
  scores = np.array([0.3, 2.0, 0.3, -1.0, 5.0, 0.3], np.float32)
  valid = np.array([True, True, True, True, False, True])
  order = np.asarray(objective.deterministic_order(scores, valid))
  np.testing.assert_array_equal(order, [1, 0, 2, 5, 3, 4])
  # A valid item scored -inf still ranks before the padding.
  scores[3] = -np.inf
  order = np.asarray(objective.deterministic_order(scores, valid))
  np.testing.assert_array_equal(order, [1, 0, 2, 5, 3, 4])
