"""RLOO: advantages, grouping, and the gradient vs exact enumeration."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from kvp_jax import objective


def _key(seed):
  # rbg keys compile ~8x faster than threefry on CPU; the code under test
  # takes any key.
  return jax.random.key(seed, impl="rbg")


def _np_perm_probs(scores, perms):
  """PL probabilities of each permutation (rows of perms), float64."""
  s = np.asarray(scores, np.float64)
  probs = np.ones(len(perms))
  for i in range(perms.shape[1]):
    rest = s[perms[:, i:]]                                    # [N, n - i]
    m = rest.max(1, keepdims=True)
    probs *= np.exp(s[perms[:, i]] - m[:, 0]) / np.exp(rest - m).sum(1)
  return probs


def _np_perm_grads(scores, perms):
  """d log pi(perm) / d scores for each permutation, float64 [N, n]."""
  s = np.asarray(scores, np.float64)
  n = len(s)
  g = np.zeros((len(perms), n))
  rows = np.arange(len(perms))
  for i in range(n):
    rest = perms[:, i:]
    w = np.exp(s[rest] - s[rest].max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    g[rows, perms[:, i]] += 1.0
    for c in range(rest.shape[1]):
      g[rows, rest[:, c]] -= w[:, c]
  return g


def _np_rewards(importance, perms):
  """-cost / oracle cost for each permutation, float64."""
  imp = np.asarray(importance, np.float64)
  ranks = np.arange(1, perms.shape[1] + 1)
  cost = (imp[perms] * ranks).sum(1)
  oracle = (np.sort(imp)[::-1] * ranks).sum()
  return -cost / oracle


def _np_advantages(r, member, min_reward=-200.0, clip=2.0, eps=1e-6):
  r = np.maximum(np.asarray(r, np.float64), min_reward)
  out = np.zeros_like(r)
  idx = np.flatnonzero(member)
  if len(idx) < 2:
    return out
  rm = r[idx]
  a = np.array([rm[k] - np.delete(rm, k).mean() for k in range(len(rm))])
  a = (a - a.mean()) / (a.std() + eps)
  out[idx] = np.clip(a, -clip, clip)
  return out


def test_rloo_advantages_match_numpy_reference():
  rng = np.random.default_rng(0)
  r = -1.0 - rng.exponential(size=(3, 10))
  r[0, 0] = -500.0  # Clamped to -200.
  member = rng.uniform(size=(3, 10)) < 0.7
  member[2] = False
  member[2, 4] = True  # A single member: no baseline, advantage 0.
  adv = np.asarray(objective.rloo_advantages(jnp.asarray(r, jnp.float32),
                                             jnp.asarray(member)))
  for g in range(3):
    np.testing.assert_allclose(adv[g], _np_advantages(r[g], member[g]),
                               rtol=1e-4, atol=1e-5)
  assert np.all(np.abs(adv) <= 2.0)
  np.testing.assert_array_equal(adv[~member], 0.0)
  np.testing.assert_array_equal(adv[2], 0.0)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _sampled_rewards_and_log_probs(key, scores, importance, valid, k,
                                   weighting=objective.UNIFORM):
  orders = objective.gumbel_sort(key, scores, valid, num_samples=k)
  shape = orders.shape
  sk = jnp.broadcast_to(scores[..., None, :], shape)
  vk = jnp.broadcast_to(valid[..., None, :], shape)
  ik = jnp.broadcast_to(importance[..., None, :], shape)
  return (objective.reward(orders, ik, vk, weighting),
          objective.log_prob(sk, orders, vk))


def _manual_loss(key, scores, importance, valid, k,
                 weighting=objective.UNIFORM):
  """The loss from its definition, groups built by hand in numpy."""
  r, lp = _sampled_rewards_and_log_probs(key, scores, importance, valid, k,
                                         weighting)
  r = np.asarray(r, np.float64)                                   # [A, B, K]
  lp = np.asarray(lp, np.float64)
  n_items = np.asarray(valid).sum(-1)                             # [A, B]
  informative = n_items >= 2
  total = 0.0
  for a in range(r.shape[0]):
    if k == 1:
      adv = _np_advantages(r[a, :, 0], informative[a])[:, None]
    else:
      adv = np.stack([_np_advantages(r[a, b], np.full(k, informative[a, b]))
                      for b in range(r.shape[1])])
    total += -(adv * lp[a]).sum() / (k * n_items[a].sum())
  return total


def _batch(seed, a=2, b=6, p=7):
  rng = np.random.default_rng(seed)
  scores = rng.normal(size=(a, b, p)).astype(np.float32)
  importance = rng.exponential(size=(a, b, p)).astype(np.float32)
  n = rng.integers(2, p + 1, size=(a, b))
  n[0, 1] = 1   # One item: not informative.
  n[1, 2] = 0   # Empty trace.
  valid = np.arange(p) < n[..., None]
  return jnp.asarray(scores), jnp.asarray(importance), jnp.asarray(valid)


def test_rloo_loss_matches_definition_in_both_grouping_modes():
  scores, importance, valid = _batch(1)
  key = _key(4)
  for k in (1, 4):
    loss, metrics = jax.jit(objective.rloo_loss, static_argnums=4)(
        key, scores, importance, valid, k)
    expected = _manual_loss(key, scores, importance, valid, k)
    np.testing.assert_allclose(loss, expected, rtol=1e-4, atol=1e-6)
    assert metrics["per_group_loss"].shape == (2,)
    np.testing.assert_allclose(metrics["per_group_loss"].sum(), loss,
                               rtol=1e-5, atol=1e-7)
    assert float(metrics["reward"]) <= -1.0
    assert float(metrics["deterministic_normalised_cost"]) >= 1.0
    for name, value in metrics.items():
      assert np.all(np.isfinite(value)), name


def test_rloo_loss_with_weighted_budgets_matches_definition():
  scores, importance, valid = _batch(2)
  key = _key(5)
  for weighting in (objective.BudgetWeighting("truncated", 2),
                    objective.BudgetWeighting("harmonic")):
    for k in (1, 3):
      loss, _ = objective.rloo_loss(key, scores, importance, valid, k,
                                    weighting=weighting)
      expected = _manual_loss(key, scores, importance, valid, k, weighting)
      np.testing.assert_allclose(loss, expected, rtol=1e-4, atol=1e-6)
      uniform, _ = objective.rloo_loss(key, scores, importance, valid, k)
      assert abs(float(loss) - float(uniform)) > 1e-6   # The weights count.


def test_rloo_loss_gradient_has_no_nans_and_skips_padding():
  scores, importance, valid = _batch(2)
  scores = jnp.where(valid, scores, -jnp.inf)  # As the agents return them.
  grad = jax.jit(jax.grad(lambda s: objective.rloo_loss(
      _key(0), s, importance, valid, 1)[0]))(scores)
  assert np.all(np.isfinite(grad))
  np.testing.assert_array_equal(np.asarray(grad)[~np.asarray(valid)], 0.0)


def _exact_gradient(scores, importance):
  """grad_s E_{sigma ~ PL(s)}[r(sigma)] = sum_sigma r pi grad log pi."""
  n = len(scores)
  perms = np.array(list(itertools.permutations(range(n))))
  probs = _np_perm_probs(scores, perms)
  rewards = _np_rewards(importance, perms)
  grads = _np_perm_grads(scores, perms)
  return (probs * rewards) @ grads, probs @ rewards


def test_reinforce_estimate_matches_exact_gradient_by_enumeration():
  rng = np.random.default_rng(3)
  n = 5
  scores = rng.normal(size=n).astype(np.float32)
  importance = rng.exponential(size=n).astype(np.float32)
  valid = np.ones(n, bool)
  exact, _ = _exact_gradient(scores, importance)

  num = 20_000
  orders = objective.gumbel_sort(_key(0), scores, valid,
                                 num_samples=num)               # [N, n]
  r = np.asarray(jax.jit(objective.reward)(orders, importance[None],
                                            valid[None]), np.float64)
  np.testing.assert_allclose(r, _np_rewards(importance, np.asarray(orders)),
                             rtol=1e-5)
  grad_logp = jax.jit(jax.vmap(jax.grad(objective.log_prob), (None, 0, None)))(
      jnp.asarray(scores), orders, valid)
  per_sample = (r - r.mean())[:, None] * np.asarray(grad_logp, np.float64)
  estimate = per_sample.mean(0)
  stderr = per_sample.std(0) / np.sqrt(num)
  cosine = estimate @ exact / (np.linalg.norm(estimate) * np.linalg.norm(exact))
  assert cosine > 0.95, (cosine, estimate, exact)
  np.testing.assert_array_less(np.abs(estimate - exact), 5 * stderr + 1e-6)


def test_rloo_loss_gradient_points_along_exact_gradient():
  rng = np.random.default_rng(4)
  n = 5
  scores = rng.normal(size=(1, n)).astype(np.float32)
  importance = rng.exponential(size=(1, n)).astype(np.float32)
  valid = np.ones((1, n), bool)
  exact, _ = _exact_gradient(scores[0], importance[0])
  # K samples of one trace: the paper's per-trace grouping.
  grad = jax.jit(jax.grad(lambda s: objective.rloo_loss(
      _key(1), s, importance, valid, 4096)[0]))(jnp.asarray(scores))
  ascent = -np.asarray(grad[0], np.float64)
  cosine = ascent @ exact / (np.linalg.norm(ascent) * np.linalg.norm(exact))
  assert cosine > 0.9, (cosine, ascent, exact)


def _exact_expected_reward(scores, importance):
  n = scores.shape[-1]
  perms = np.array(list(itertools.permutations(range(n))))
  return np.mean([_np_perm_probs(s, perms) @ _np_rewards(i, perms)
                  for s, i in zip(scores, importance)])


def test_sgd_on_rloo_loss_increases_expected_reward():
  rng = np.random.default_rng(5)
  b, n = 8, 5
  importance = jnp.asarray(rng.exponential(size=(b, n)), jnp.float32)
  valid = jnp.ones((b, n), bool)

  for k in (1, 8):
    @functools.partial(jax.jit, static_argnums=2)
    def step(scores, key, k):
      grad = jax.grad(lambda s: objective.rloo_loss(
          key, s, importance, valid, k)[0])(scores)
      return scores - 2.0 * n * grad

    scores = jnp.zeros((b, n), jnp.float32)
    before = _exact_expected_reward(np.asarray(scores), np.asarray(importance))
    for i, key in enumerate(jax.random.split(_key(6), 40)):
      scores = step(scores, key, k)
    after = _exact_expected_reward(np.asarray(scores), np.asarray(importance))
    # Uniform start = random baseline; the oracle is -1.
    assert after > before + 0.5 * (-1.0 - before), (k, before, after)
