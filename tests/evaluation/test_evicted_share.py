"""Evicted importance share against a brute-force numpy version and against
the cache's own eviction; its aggregation over heads."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import cache as cache_lib
from kvp_jax.evaluation import _evicted_share

SINKS, RECENT = 2, 3
PROTECTED = cache_lib.Protected(num_sinks=SINKS, num_recent=RECENT)
BUDGETS = (5, 8, 12)


def _brute_force(scores, importance, positions, lengths, budgets,
                 num_sinks=SINKS, num_recent=RECENT):
  """Head by head: keep the protected tokens, then the best scores (ties
  to the newer token, NaN last) up to b, and sum what is left."""
  b_, k_, _ = scores.shape
  share = np.full((b_, k_, len(budgets)), np.nan)
  for b in range(b_):
    for k in range(k_):
      slots = [s for s in range(scores.shape[2]) if positions[b, k, s] >= 0]
      prot = [s for s in slots if positions[b, k, s] < num_sinks or
              positions[b, k, s] >= lengths[b] - num_recent]
      rest = [s for s in slots if s not in prot]
      key = lambda s: (-(-np.inf if np.isnan(scores[b, k, s]) else
                         scores[b, k, s]), -positions[b, k, s])
      ranked = prot + sorted(rest, key=key)
      total = math.fsum(importance[b, k, s] for s in slots)
      if math.fsum(importance[b, k, s] for s in rest) <= 1e-30:
        continue                                         # Uninformative.
      for i, budget in enumerate(budgets):
        if len(slots) <= budget:
          continue                                       # Nothing evicted.
        share[b, k, i] = math.fsum(importance[b, k, s]
                                   for s in ranked[budget:]) / total
  return share


def _inputs(seed, batch=3, heads=4, slots=20):
  rng = np.random.default_rng(seed)
  lengths = np.array([30, 14, 9], np.int32)[:batch]
  positions = np.full((batch, heads, slots), -1, np.int32)
  for b in range(batch):
    for k in range(heads):
      # A ring-like cache: some of the newest positions, in shuffled slots.
      n = min(int(lengths[b]), int(rng.integers(slots // 2, slots + 1)))
      keep = np.sort(rng.choice(lengths[b], size=n, replace=False))
      keep[-RECENT:] = np.arange(lengths[b] - RECENT, lengths[b])
      keep = np.unique(keep)
      where = rng.choice(slots, size=keep.size, replace=False)
      positions[b, k, where] = keep
  scores = rng.normal(size=positions.shape).astype(np.float32)
  scores[0, 0, :6] = 0.5                                 # Ties.
  scores[0, 1, ::4] = np.nan
  importance = rng.exponential(size=positions.shape).astype(np.float32)
  importance[positions < 0] = 7.0                      # Empty slots: ignored.
  importance[1, 2] = 0.0                               # An uninformative head.
  # Importance only on protected tokens: uninformative as well.
  prot = np.asarray(cache_lib.keep_mask_protected(
      jnp.asarray(positions), jnp.asarray(lengths),
      cache_lib.Protected(num_sinks=SINKS, num_recent=RECENT)))
  importance[2, 3] = np.where(prot[2, 3], 1.0, 0.0)
  return scores, importance, positions, lengths


def test_matches_brute_force():
  scores, importance, positions, lengths = _inputs(0)
  share, counted = _evicted_share.evicted_share(
      scores, importance, positions, lengths, BUDGETS, PROTECTED)
  ref = _brute_force(scores, importance, positions, lengths, BUDGETS)
  np.testing.assert_allclose(np.asarray(share), ref, rtol=1e-5, atol=1e-7,
                             equal_nan=True)
  np.testing.assert_array_equal(np.asarray(counted), ~np.isnan(ref))
  # The example exercises every case.
  assert np.isnan(ref[1, 2]).all() and np.isnan(ref[2, 3]).all()
  assert np.isnan(ref).any() and (~np.isnan(ref)).sum() > 10
  step = np.diff(ref[0], axis=-1)                        # Larger b, less lost.
  assert np.all(step[~np.isnan(step)] < 0)


def test_agrees_with_the_caches_own_eviction():
  scores, importance, positions, lengths = _inputs(1)
  share, counted = _evicted_share.evicted_share(
      scores, importance, positions, lengths, BUDGETS, PROTECTED)
  imp = np.where(positions >= 0, importance, 0.0)
  for i, b in enumerate(BUDGETS):
    keep = cache_lib.select_top(jnp.asarray(scores), jnp.asarray(positions),
                                b, cache_lib.Protected(num_sinks=SINKS, num_recent=RECENT),
                                jnp.asarray(lengths))
    kept = np.asarray(cache_lib.kept_mask(keep, positions.shape[-1]))
    expected = (imp * ~kept).sum(-1) / np.maximum(imp.sum(-1), 1e-30)
    got = np.asarray(share[..., i])
    c = np.asarray(counted[..., i])
    np.testing.assert_allclose(got[c], expected[c], rtol=1e-5, atol=1e-7)


def test_oracle_scores_evict_the_least():
  scores, importance, positions, lengths = _inputs(2)
  oracle, _ = _evicted_share.evicted_share(
      importance, importance, positions, lengths, BUDGETS, PROTECTED)
  other, _ = _evicted_share.evicted_share(
      scores, importance, positions, lengths, BUDGETS, PROTECTED)
  ok = ~np.isnan(np.asarray(oracle))
  assert np.all(np.asarray(oracle)[ok] <= np.asarray(other)[ok] + 1e-6)


def test_budgets_below_the_protected_tokens_are_an_error():
  scores, importance, positions, lengths = _inputs(0)
  with pytest.raises(ValueError, match="minimum"):
    _evicted_share.evicted_share(scores, importance, positions, lengths,
                                 (4,), PROTECTED)


def test_aggregate_geometric_mean_per_layer_group():
  rng = np.random.default_rng(0)
  samples, layers, heads, nb = 3, 4, 2, 2
  shares = rng.uniform(0.01, 0.5, size=(samples, layers, heads, nb))
  shares[0, 1, 0, 0] = np.nan              # Not counted in one sample.
  shares[:, 2, 1, :] = np.nan              # A head no sample counts.
  shares[:, 1::2, :, 1] = np.nan           # Global layers evicting nothing.
  shares[1, 0, 1, 0] = 0.0                 # An exact zero: floored at eps.
  global_layers = (1, 3)
  got = _evicted_share.aggregate_evicted_share(shares, global_layers,
                                               eps=1e-6)
  for j in range(nb):
    per = {}
    for l in range(layers):
      for k in range(heads):
        vals = [shares[s, l, k, j] for s in range(samples)
                if not np.isnan(shares[s, l, k, j])]
        if vals:
          per[l, k] = max(sum(vals) / len(vals), 1e-6)
    for name, pick in (("all", lambda l: True),
                       ("global", lambda l: l in global_layers),
                       ("local", lambda l: l not in global_layers)):
      vals = [v for (l, _), v in per.items() if pick(l)]
      assert got[f"heads_{name}"][j] == len(vals)
      if vals:
        expected = math.prod(vals) ** (1 / len(vals))
        assert got[name][j] == pytest.approx(expected, rel=1e-12)
      else:
        assert np.isnan(got[name][j])
  assert np.isnan(got["global"][1])         # No global head counted.
  assert got["heads_local"][0] == 3


def test_aggregate_rejects_a_bad_layer():
  with pytest.raises(ValueError, match="global layer"):
    _evicted_share.aggregate_evicted_share(np.zeros((2, 1, 1)), (5,))
