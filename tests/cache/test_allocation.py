"""Budget allocators: exact totals, per-head minimums, calibrated scores
decide the split (against a brute-force greedy allocation in numpy), and
per-head budgets compact like masking through the decoder."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import cache as cache_lib
from kvp_jax import model as model_lib
from tests.cache import helpers

P = cache_lib.Protected()     # The protected set these tests evict around.

SINKS, RECENT = 4, 16
LOWEST = SINKS + RECENT
B, K = 2, 3
LENGTHS = (60, 45)
SIZES = (64, 24)      # Layer 0 holds every token, layer 1 a 24-token ring.


def pool(seed=0, offsets=None):
  """Scores and positions of two layers; row 1 head 2 of layer 1 holds only
  12 tokens. Scores on a coarse grid: ties between heads are common.

  Returns (scores, positions) as tuples of [B, K, S_l] arrays.
  """
  rng = np.random.default_rng(seed)
  scores, positions = [], []
  for layer, size in enumerate(SIZES):
    pos = np.full((B, K, size), -1, np.int32)
    for b, t in enumerate(LENGTHS):
      for k in range(K):
        held = np.arange(t) if size >= t else np.arange(t - size, t)
        if layer == 1 and b == 1 and k == 2:
          held = held[-12:]
        pos[b, k, :len(held)] = held
        pos[b, k] = rng.permutation(pos[b, k])
    s = np.round(rng.normal(size=(B, K, size)) * 2) / 2
    if offsets is not None:
      s = s + np.asarray(offsets[layer])[None, :, None]
    scores.append(jnp.asarray(np.where(pos >= 0, s, -np.inf), jnp.float32))
    positions.append(jnp.asarray(pos))
  return tuple(scores), tuple(positions)


def brute_force(scores, positions, total, ctx, max_per_head=None):
  """Greedy, one slot at a time: each head starts with its protected tokens
  and its best others up to the minimum; then the next slot goes to the head
  whose next-best token scores highest (ties: newer, then lower head).

  Returns per layer [B, K] budgets.
  """
  out = [np.zeros((B, s.shape[1]), np.int64) for s in scores]
  for b in range(B):
    heads = []                                      # (layer, k)
    for l, (s, p) in enumerate(zip(scores, positions)):
      for k in range(s.shape[1]):
        heads.append((l, k, np.asarray(s[b, k], np.float64),
                      np.asarray(p[b, k])))
    free, taken, caps, protected = [], [], [], []
    for l, k, s, p in heads:
      valid = p >= 0
      prot = valid & ((p < SINKS) | (p >= ctx[b] - RECENT))
      order = sorted(np.flatnonzero(valid & ~prot),
                     key=lambda j: (-s[j], -p[j]))
      free.append(order)
      protected.append(int(prot.sum()))
      taken.append(min(len(order), max(LOWEST - int(prot.sum()), 0)))
      caps.append(len(order) if max_per_head is None
                  else min(len(order), max_per_head - int(prot.sum())))
    remaining = total - sum(p + t for p, t in zip(protected, taken))
    while remaining > 0:
      best, best_key = None, None
      for h, (l, k, s, p) in enumerate(heads):
        if taken[h] < caps[h]:
          j = free[h][taken[h]]
          key = (s[j], p[j], -h)
          if best_key is None or key > best_key:
            best, best_key = h, key
      if best is None:
        break
      taken[best] += 1
      remaining -= 1
    for h, (l, k, _, _) in enumerate(heads):
      out[l][b, k] = protected[h] + taken[h]
  return out


def valid_counts(positions):
  return [np.asarray(jnp.sum(p >= 0, axis=-1)) for p in positions]


@pytest.mark.parametrize("total,cap", [(130, None), (200, None), (200, 40),
                                       (320, 48)])
def test_model_scope_matches_brute_force(total, cap):
  scores, positions = pool()
  ctx = jnp.asarray(LENGTHS, jnp.int32)
  fn = jax.jit(functools.partial(cache_lib.adaptive_budgets,
                                 total_budget=total, protected=P,
                                 scope="model", max_per_head=cap))
  got = fn(scores, positions, context_length=ctx)
  want = brute_force(scores, positions, total, LENGTHS, cap)
  for g, w in zip(got.per_head, want):
    np.testing.assert_array_equal(np.asarray(g), w)
  counts = valid_counts(positions)
  np.testing.assert_array_equal(np.asarray(got.totals), sum(
      w.sum(axis=1) for w in want))
  available = sum(c.sum(axis=1) for c in counts)        # [B] tokens held.
  if cap is None:                                      # Exact unless short.
    np.testing.assert_array_equal(np.asarray(got.totals),
                                  np.minimum(total, available))
  for g, c, width in zip(got.per_head, counts, got.widths):
    g = np.asarray(g)
    assert (g >= np.minimum(LOWEST, c)).all()           # Minimum per head.
    assert (g <= c).all()                                # Never > held.
    assert (g <= width).all()
    if cap is not None:
      assert (g <= cap).all() and width <= cap


def test_totals_are_exact():
  scores, positions = pool(seed=1)
  for total in (120, 121, 157, 195):     # Row 1 holds 195 tokens.
    got = cache_lib.adaptive_budgets(scores, positions, total, protected=P)
    np.testing.assert_array_equal(np.asarray(got.totals), [total, total])


def test_layer_scope_matches_brute_force():
  scores, positions = pool(seed=2)
  totals = (100, 66)
  got = cache_lib.adaptive_budgets(scores, positions, totals, protected=P,
                                   scope="layer")
  for layer, total in enumerate(totals):
    want = brute_force(scores[layer:layer + 1], positions[layer:layer + 1],
                       total, LENGTHS)[0]
    np.testing.assert_array_equal(np.asarray(got.per_head[layer]), want)
  np.testing.assert_array_equal(np.asarray(jnp.sum(got.per_head[0], -1)),
                                [100, 100])
  # Row 1 of layer 1 holds 24 + 24 + 12 = 60 tokens < 66: all are kept.
  np.testing.assert_array_equal(np.asarray(got.per_head[1][1]), [24, 24, 12])
  assert int(jnp.sum(got.per_head[1][0])) == 66


def test_higher_calibrated_scores_get_more_budget():
  scores, positions = pool(seed=3, offsets=[(0.0, 3.0, 0.0), (0.0, 0.0, 0.0)])
  got = cache_lib.adaptive_budgets(scores[:1], positions[:1], 3 * 32,
                                   protected=P, scope="layer")
  b = np.asarray(got.per_head[0])
  assert (b[:, 1] > b[:, 0]).all() and (b[:, 1] > b[:, 2]).all()


def test_equal_scores_give_near_uniform_budgets():
  _, positions = pool()
  scores = tuple(jnp.where(p >= 0, 0.5, -jnp.inf) for p in positions)
  got = cache_lib.adaptive_budgets(scores[:1], positions[:1], 3 * 30 + 1,
                                   protected=P, scope="layer")
  b = np.asarray(got.per_head[0])
  assert (b.max(axis=1) - b.min(axis=1) <= 1).all()
  np.testing.assert_array_equal(b.sum(axis=1), [91, 91])


def test_normalise_scores_within_head():
  scores, positions = pool(seed=4)
  s, p = scores[0], positions[0]
  valid = p >= 0
  s = s.at[0, 0, jnp.argmax(p[0, 0])].set(jnp.inf)     # A rule's "keep".
  shares = cache_lib.normalise_scores_within_head(s, valid)
  finite = np.isfinite(np.asarray(shares))
  assert (np.asarray(shares)[~np.asarray(valid)] == -np.inf).all()
  assert np.asarray(shares)[0, 0, int(jnp.argmax(p[0, 0]))] == np.inf
  np.testing.assert_allclose(np.where(finite, shares, 0).sum(-1),
                             np.ones((B, K)), rtol=1e-5)
  # A per-head offset of the logits (which a ranking loss cannot see) does
  # not change the shares, hence not the allocation.
  shifted = s + jnp.asarray([0.0, 5.0, -7.0])[None, :, None]
  np.testing.assert_allclose(
      np.asarray(cache_lib.normalise_scores_within_head(shifted, valid)),
      np.asarray(shares), rtol=1e-5, atol=1e-7)


def test_allocation_errors():
  scores, positions = pool()
  with pytest.raises(ValueError, match=r"total_budget=119 is below the "
                                       r"minimum 120"):
    cache_lib.adaptive_budgets(scores, positions, 119, protected=P)
  with pytest.raises(ValueError, match=r"total_budget of layer 1=50 is below "
                                       r"the minimum 60"):
    cache_lib.adaptive_budgets(scores, positions, (60, 50), protected=P,
                               scope="layer")
  with pytest.raises(ValueError, match="scope must be one of"):
    cache_lib.adaptive_budgets(scores, positions, 200, protected=P,
                               scope="head")
  with pytest.raises(ValueError, match=r"max_per_head=10 is below the "
                                       r"minimum 20"):
    cache_lib.adaptive_budgets(scores, positions, 200, protected=P,
                               max_per_head=10)
  assert cache_lib.uniform_budgets(3, 24, P) == (24, 24, 24)
  with pytest.raises(ValueError, match="budget=8 is below the minimum 20"):
    cache_lib.uniform_budgets(3, 8, P)


def test_window_capped_budgets_cap_windowed_layers_only():
  # Gemma 3 270M: 5 local layers (window 512), then a global one, x3.
  config = model_lib.gemma3_270m()
  budgets = cache_lib.window_capped_budgets(config, 1024, P)
  assert budgets == tuple(1024 if config.layer_window(i) is None else 512
                          for i in range(18))
  assert cache_lib.window_capped_budgets(config, 256, P) == (256,) * 18
  # A window below the protected sinks + recent tokens rounds up to them.
  small = config.replace(sliding_window=8)
  assert cache_lib.window_capped_budgets(small, 64, P)[0] == 20
  with pytest.raises(ValueError, match="budget=8 is below the minimum 20"):
    cache_lib.window_capped_budgets(config, 8, P)


def test_adaptive_eviction_decodes_like_masking():
  """Per-head budgets through evict: the compacted cache (widths from
  tighten, room for the continuation) gives the masked cache's logits."""
  config, _ = helpers.tiny_model()
  full, ctx = helpers.prefilled(window_rings=False)
  rng = np.random.default_rng(5)
  logits = tuple(jnp.asarray(rng.normal(size=layer.pos.shape), jnp.float32)
                 for layer in full.layers)
  positions = tuple(layer.pos for layer in full.layers)
  shares = tuple(cache_lib.normalise_scores_within_head(s, p >= 0)
                 for s, p in zip(logits, positions))
  total = config.num_layers * config.num_kv_heads * 26
  budgets = jax.jit(functools.partial(cache_lib.adaptive_budgets,
                                      total_budget=total, protected=P,
                                      max_per_head=40))(
      shares, positions, context_length=ctx)
  np.testing.assert_array_equal(np.asarray(budgets.totals), [total, total])
  assert budgets.widths == (40,) * config.num_layers
  budgets = cache_lib.tighten(budgets, P, multiple=4)
  assert all(w % 4 == 0 and w <= 40 for w in budgets.widths)
  caps = tuple(w + helpers.NEW for w in budgets.widths)
  small = jax.jit(lambda c, s, bud: cache_lib.evict(c, s, bud, caps, P, ctx))(
      full, shares, budgets)
  assert small.capacities == caps
  for layer, b in zip(small.layers, budgets.per_head):
    np.testing.assert_array_equal(np.asarray(jnp.sum(layer.valid, -1)),
                                  np.asarray(b))
  masked = model_lib.KVCache(layers=tuple(
      cache_lib.mask_evicted(layer, cache_lib.select_top(
          s, layer.pos, b, P, ctx, max_budget=w))
      for layer, s, b, w in zip(full.layers, shares, budgets.per_head,
                                budgets.widths)))
  got = helpers.continue_logits(small)
  want = helpers.continue_logits(masked)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=2e-5, rtol=1e-5)
