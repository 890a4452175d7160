"""What the K > 1 RLOO advantages are standardised over (advantage_norm):
"per_trace" (the default) is exactly the loss the shipped policy was
trained with, "batch" is the method spec's formula, and the two differ
when the traces' rewards spread differently."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import objective
from kvp_jax import training
from kvp_jax.objective import _reward

K = 4


def _key(seed):
  return jax.random.key(seed, impl="rbg")


# --- Frozen: rloo_advantages and rloo_loss's advantage + loss lines as they
# were before advantage_norm existed (the shipped policy's training). ---


def _frozen_advantages(rewards, member, min_reward=-200.0, clip=2.0,
                       eps=1e-6):
  r = jnp.maximum(rewards.astype(jnp.float32), min_reward)
  member = jnp.broadcast_to(member.astype(bool), r.shape)
  m = member.astype(jnp.float32)
  n = jnp.sum(m, axis=-1, keepdims=True)
  total = jnp.sum(m * r, axis=-1, keepdims=True)
  baseline = (total - r) / jnp.maximum(n - 1.0, 1.0)
  ok = member & (n >= 2.0)
  adv = jnp.where(ok, r - baseline, 0.0)
  n_safe = jnp.maximum(n, 1.0)
  mean = jnp.sum(m * adv, axis=-1, keepdims=True) / n_safe
  var = jnp.sum(m * jnp.square(adv - mean), axis=-1, keepdims=True) / n_safe
  adv = (adv - mean) / (jnp.sqrt(var) + eps)
  return jnp.where(ok, jnp.clip(adv, -clip, clip), 0.0)


def _frozen_loss(key, scores, importance, valid, k):
  scores = scores.astype(jnp.float32)
  importance = importance.astype(jnp.float32)
  valid = valid.astype(bool)
  shape = scores.shape[:-1] + (k, scores.shape[-1])
  orders = objective.gumbel_sort(key, jax.lax.stop_gradient(scores), valid,
                                 num_samples=k)
  scores_k = jnp.broadcast_to(scores[..., None, :], shape)
  valid_k = jnp.broadcast_to(valid[..., None, :], shape)
  importance_k = jnp.broadcast_to(importance[..., None, :], shape)
  n_items = jnp.sum(valid.astype(jnp.float32), axis=-1)
  oracle = objective.oracle_cost(importance, valid)
  cost = objective.ranking_cost(orders, importance_k, valid_k)
  rewards = -_reward._safe_ratio(cost, oracle[..., None])
  informative = (n_items >= 2.0) & (oracle > _reward._TINY)
  if k == 1:
    adv = _frozen_advantages(rewards[..., 0], informative)[..., None]
  else:
    adv = _frozen_advantages(rewards, informative[..., None])
  adv = jax.lax.stop_gradient(adv)
  logp = objective.log_prob(scores_k, orders, valid_k)
  steps = k * jnp.sum(n_items, axis=-1)
  return jnp.sum(-jnp.sum(adv * logp, axis=(-2, -1)) /
                 jnp.maximum(steps, 1.0))


# --- The method spec's formula in numpy (docs/kvp_method.md, section 4). ---


def _np_batch_advantages(r, informative, min_reward=-200.0, clip=2.0,
                         eps=1e-6):
  """r [B, K] of one agent: leave-one-out within each trace, standardised
  over every informative trace's K advantages of the batch, clipped."""
  r = np.maximum(np.asarray(r, np.float64), min_reward)
  k = r.shape[1]
  a = r - (r.sum(1, keepdims=True) - r) / (k - 1)
  pool = a[informative]
  a = (a - pool.mean()) / (pool.std() + eps)
  return np.where(informative[:, None], np.clip(a, -clip, clip), 0.0)


def _np_log_prob_and_grad(s, order):
  """log pi(order) under PL(s) and its gradient wrt s, float64."""
  s = np.asarray(s, np.float64)
  logp, grad = 0.0, np.zeros_like(s)
  for i in range(len(order)):
    rest = order[i:]
    w = np.exp(s[rest] - s[rest].max())
    logp += s[order[i]] - (np.log(w.sum()) + s[rest].max())
    grad[order[i]] += 1.0
    grad[rest] -= w / w.sum()
  return logp, grad


def _np_reward(imp, order):
  ranks = np.arange(1, len(order) + 1)
  oracle = (np.sort(imp)[::-1] * ranks).sum()
  return -(imp[order] * ranks).sum() / oracle


def _example(agents=2, traces=5, items=7, seed=0):
  """Scores, importance and valid [A, B, P]: traces whose rewards spread
  differently (peaked and flat importance), and one uninformative trace
  (all importance 0)."""
  rng = np.random.default_rng(seed)
  scores = rng.normal(size=(agents, traces, items)).astype(np.float32)
  imp = rng.random((agents, traces, items)) ** np.linspace(
      0.2, 8.0, traces)[None, :, None]
  imp[:, -1] = 0.0
  valid = np.ones_like(scores, bool)
  return (jnp.asarray(scores), jnp.asarray(imp, jnp.float32),
          jnp.asarray(valid))


def test_the_norms_and_the_default():
  assert objective.ADVANTAGE_NORMS == ("per_trace", "batch", "none")
  assert training.TrainConfig().advantage_norm == "per_trace"
  with pytest.raises(ValueError, match="config.train.advantage_norm"):
    training.TrainConfig(advantage_norm="group")
  scores, imp, valid = _example()
  with pytest.raises(ValueError, match="advantage_norm must be one of"):
    objective.rloo_loss(_key(0), scores, imp, valid, K,
                        advantage_norm="traces")


def test_rloo_advantages_default_is_unchanged():
  rng = np.random.default_rng(1)
  rewards = jnp.asarray(-1.0 - rng.random((3, 6, K)) * 5, jnp.float32)
  member = jnp.asarray(rng.random((3, 6, 1)) > 0.3)
  np.testing.assert_array_equal(
      np.asarray(objective.rloo_advantages(rewards, member)),
      np.asarray(_frozen_advantages(rewards, member)))


@pytest.mark.parametrize("k", [1, K])
def test_per_trace_is_exactly_the_shipped_training_loss(k):
  """Loss and gradients equal, bit for bit, those of the code the shipped
  policy was trained with (the frozen copy above), and the default is
  "per_trace"."""
  scores, imp, valid = _example()
  key = _key(3)
  want, want_grad = jax.value_and_grad(_frozen_loss, argnums=1)(
      key, scores, imp, valid, k)
  for kwargs in ({}, {"advantage_norm": "per_trace"}):
    fn = lambda s, kw=kwargs: objective.rloo_loss(key, s, imp, valid, k,
                                                  **kw)[0]
    got, grad = jax.value_and_grad(fn)(scores)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    np.testing.assert_array_equal(np.asarray(grad), np.asarray(want_grad))


def test_batch_matches_the_spec_formula():
  """"batch": loss and gradients of -sum A log pi / sum P with A from the
  spec's formula (leave-one-out within a trace, standardised over the
  agent's whole batch), all in float64 numpy on the same rankings."""
  scores, imp, valid = _example()
  key = _key(4)
  fn = lambda s: objective.rloo_loss(key, s, imp, valid, K,
                                     advantage_norm="batch")[0]
  got, grad = jax.value_and_grad(fn)(scores)
  orders = np.asarray(objective.gumbel_sort(key, scores, valid,
                                            num_samples=K))  # [A, B, K, P]
  s, imp_np = np.asarray(scores, np.float64), np.asarray(imp, np.float64)
  a_, b_, p_ = s.shape
  want, want_grad = 0.0, np.zeros_like(s)
  for a in range(a_):
    informative = imp_np[a].sum(-1) > 0
    rewards = np.zeros((b_, K))
    logp = np.zeros((b_, K))
    dlogp = np.zeros((b_, K, p_))
    for b in range(b_):
      for k in range(K):
        if informative[b]:
          rewards[b, k] = _np_reward(imp_np[a, b], orders[a, b, k])
        logp[b, k], dlogp[b, k] = _np_log_prob_and_grad(s[a, b],
                                                        orders[a, b, k])
    adv = _np_batch_advantages(rewards, informative)
    steps = K * b_ * p_
    want += -(adv * logp).sum() / steps
    want_grad[a] = -(adv[..., None] * dlogp).sum(1) / steps
  np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-4,
                             atol=1e-6)
  # rloo_advantages alone: the same formula over a [B, K] block.
  r = jnp.asarray(-1.0 - np.random.default_rng(2).random((2, 6, K)) *
                  np.array([0.1, 1, 3, 10, 0.5, 2])[:, None], jnp.float32)
  member = np.array([True, True, False, True, True, True])
  got = objective.rloo_advantages(r, jnp.asarray(member)[:, None],
                                  standardise_axes=(-2, -1))
  for a in range(2):
    np.testing.assert_allclose(np.asarray(got[a]),
                               _np_batch_advantages(np.asarray(r[a]), member),
                               rtol=1e-5, atol=1e-6)


def test_none_only_clips():
  r = jnp.asarray([[-1.0, -1.5, -9.0, -1.2]], jnp.float32)
  got = np.asarray(objective.rloo_advantages(r, standardise_axes=None))
  x = np.asarray(r, np.float64)[0]
  loo = x - (x.sum() - x) / 3
  np.testing.assert_allclose(got[0], np.clip(loo, -2, 2), rtol=1e-6)


def test_per_trace_and_batch_differ_when_reward_scales_differ():
  """Two traces with the same pattern of rewards, one spread 20x wider:
  per trace, both get the same advantages; over the batch, the narrow
  trace's shrink. And so the losses and gradients differ."""
  pattern = np.array([0.0, -0.1, -0.2, -0.3])
  r = jnp.asarray(np.stack([-1.0 + pattern, -1.0 + 20 * pattern]),
                  jnp.float32)                                # [2, K]
  per = np.asarray(objective.rloo_advantages(r))
  np.testing.assert_allclose(per[0], per[1], rtol=1e-4)
  batch = np.asarray(objective.rloo_advantages(r, standardise_axes=(-2, -1)))
  assert np.abs(batch[0]).max() < 0.2 * np.abs(batch[1]).max()
  scores, imp, valid = _example()
  key = _key(5)
  out = {}
  for norm in ("per_trace", "batch"):
    fn = lambda s, n=norm: objective.rloo_loss(key, s, imp, valid, K,
                                               advantage_norm=n)[0]
    out[norm] = jax.value_and_grad(fn)(scores)
  assert float(out["per_trace"][0]) != float(out["batch"][0])
  assert np.abs(np.asarray(out["per_trace"][1]) -
                np.asarray(out["batch"][1])).max() > 1e-4
