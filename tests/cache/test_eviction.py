"""Eviction by gather: compaction gives the same logits as masking, the kept
set is the top-b by score plus the protected tokens (checked in numpy),
whatever the slot order, and memory follows the budget."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import cache as cache_lib
from kvp_jax import inference
from kvp_jax import model as model_lib
from kvp_jax import scorers
from tests.cache import helpers

P = cache_lib.Protected()     # The protected set these tests evict around.

SINKS, RECENT = 4, 16


def random_scores(kv_cache, seed=0):
  """One [B, K, S_l] score array per layer, -inf on empty slots."""
  rng = np.random.default_rng(seed)
  return tuple(
      jnp.asarray(np.where(np.asarray(layer.valid),
                           rng.normal(size=layer.pos.shape), -np.inf),
                  jnp.float32)
      for layer in kv_cache.layers)


@functools.partial(jax.jit, static_argnames=("budget",))
def masked(kv_cache, scores, budget, ctx):
  """The same-size cache with everything outside the top-b masked."""
  return model_lib.KVCache(layers=tuple(
      cache_lib.mask_evicted(layer, cache_lib.select_top(s, layer.pos, budget,
                                                         P, ctx))
      for layer, s in zip(kv_cache.layers, scores)))


@functools.partial(jax.jit, static_argnames=("budget", "capacities"))
def jit_evict(kv_cache, scores, ctx, budget, capacities):
  return cache_lib.evict(kv_cache, scores, budget, capacities, P, ctx)


# --- Compaction == masking, through the decoder ----------------------------

@pytest.mark.parametrize("window_rings", [True, False])
def test_compacted_cache_decodes_like_masked_cache(window_rings):
  config, _ = helpers.tiny_model()
  full, ctx = helpers.prefilled(window_rings)
  if window_rings:
    assert full.layers[0].capacity == helpers.WINDOW < helpers.PROMPT
  scores = random_scores(full)
  budget = 24
  caps = cache_lib.eviction_capacities(config, budget, helpers.NEW)
  # Local layers need no room beyond the window: the ring wraps during the
  # decoding below, over the compacted layout.
  assert caps == (helpers.WINDOW, helpers.WINDOW, budget + helpers.NEW)
  small = jit_evict(full, scores, ctx, budget, caps)
  assert small.capacities == caps
  got = helpers.continue_logits(small)
  want = helpers.continue_logits(masked(full, scores, budget, ctx))
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=2e-5, rtol=1e-5)
  if not window_rings:
    # The eviction matters: the uncompressed cache predicts otherwise.
    unevicted = helpers.continue_logits(full)
    assert max(np.abs(g - u).max() for g, u in zip(got, unevicted)) > 1e-3


def test_budget_covering_the_cache_changes_nothing():
  full, ctx = helpers.prefilled(window_rings=False)
  budget = helpers.PROMPT                     # Every cached token fits.
  small = jit_evict(full, random_scores(full, seed=3), ctx, budget,
                    full.capacities)
  for layer in small.layers:                  # Nothing evicted.
    assert int(jnp.sum(layer.valid[0, 0])) == helpers.PROMPT
    assert int(jnp.sum(layer.valid[1, 0])) == helpers.PROMPT - helpers.PAD
  got = helpers.continue_logits(small)
  want = helpers.continue_logits(full)
  # Equal up to float summation order (the slots were rearranged).
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)


# --- The kept set, against numpy ------------------------------------------

B, K, S, H = 2, 3, 40, 4
LENGTHS = (37, 26)


def synthetic_layer(seed=0):
  """A LayerCache with shuffled slots, empty slots, and tied scores.

  Returns (layer, scores [B, K, S], context_length [B]).
  """
  rng = np.random.default_rng(seed)
  pos = np.full((B, K, S), -1, np.int32)
  for b, t in enumerate(LENGTHS):
    for k in range(K):
      drop = rng.choice(np.arange(SINKS, t - RECENT), size=k, replace=False)
      kept = np.setdiff1d(np.arange(t), drop)
      pos[b, k, :len(kept)] = kept
      pos[b, k] = rng.permutation(pos[b, k])
  # Scores on a coarse grid, so many ties must be broken by position.
  scores = np.round(rng.normal(size=(B, K, S)) * 2) / 2
  scores = np.where(pos >= 0, scores, -np.inf).astype(np.float32)
  f32 = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  layer = model_lib.LayerCache(k=f32(B, K, S, H), v=f32(B, K, S, H),
                               pos=jnp.asarray(pos),
                               end=jnp.asarray(S, jnp.int32))
  return layer, jnp.asarray(scores), jnp.asarray(LENGTHS, jnp.int32)


def numpy_kept(scores, pos, ctx, budget):
  """Per (b, k), the set of kept positions: protected, then top by score
  (ties: newer token first)."""
  scores, pos = np.asarray(scores), np.asarray(pos)
  out = {}
  for b in range(pos.shape[0]):
    for k in range(pos.shape[1]):
      p, s = pos[b, k], scores[b, k]
      valid = p >= 0
      prot = valid & ((p < SINKS) | (p >= ctx[b] - RECENT))
      others = sorted(np.flatnonzero(valid & ~prot),
                      key=lambda j: (-s[j], -p[j]))
      chosen = list(p[prot]) + [p[j] for j in others[:budget - prot.sum()]]
      out[b, k] = set(int(x) for x in chosen)
  return out


def kept_positions(pos, keep_idx):
  pos, keep_idx = np.asarray(pos), np.asarray(keep_idx)
  return {(b, k): set(int(pos[b, k, i]) for i in keep_idx[b, k] if i >= 0)
          for b in range(pos.shape[0]) for k in range(pos.shape[1])}


@pytest.mark.parametrize("budget", [20, 23, 30, 45])
def test_kept_set_is_protected_plus_top_scores(budget):
  layer, scores, ctx = synthetic_layer()
  keep = jax.jit(cache_lib.select_top, static_argnums=(2, 3))(
      scores, layer.pos, budget, P, ctx)
  assert keep.shape == (B, K, budget) and keep.dtype == jnp.int32
  want = numpy_kept(scores, layer.pos, np.asarray(ctx), budget)
  assert kept_positions(layer.pos, keep) == want
  for (b, k), kept in want.items():          # Empty slots only when short.
    n = int(np.sum(np.asarray(keep[b, k]) >= 0))
    assert n == len(kept) == min(budget, int(jnp.sum(layer.valid[b, k])))


def test_selection_ignores_slot_order():
  layer, scores, ctx = synthetic_layer(seed=1)
  rng = np.random.default_rng(7)
  perm = jnp.asarray(np.stack([[rng.permutation(S) for _ in range(K)]
                               for _ in range(B)]))               # [B, K, S]
  take = lambda x: jnp.take_along_axis(
      x, perm if x.ndim == 3 else perm[..., None], axis=2)
  shuffled = layer.replace(k=take(layer.k), v=take(layer.v),
                           pos=take(layer.pos))
  shuffled_scores = take(scores)
  a = cache_lib.select_top(scores, layer.pos, 26, P, ctx)
  b = cache_lib.select_top(shuffled_scores, shuffled.pos, 26, P, ctx)
  assert kept_positions(layer.pos, a) == kept_positions(shuffled.pos, b)
  # The compacted caches are identical, arrays and all.
  ca = cache_lib.compact(layer, a, 30)
  cb = cache_lib.compact(shuffled, b, 30)
  for x, y in zip(jax.tree_util.tree_leaves(ca), jax.tree_util.tree_leaves(cb)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_ties_go_to_newer_tokens():
  pos = jnp.arange(40, dtype=jnp.int32)[None, None]
  scores = jnp.zeros((1, 1, 40))
  keep = cache_lib.select_top(scores, pos, 24, P, jnp.asarray([40]))
  kept = sorted(kept_positions(pos, keep)[0, 0])
  # Sinks 0..3, recent 24..39, then the newest of the tied rest: 20..23.
  assert kept == [0, 1, 2, 3] + list(range(20, 40))


def test_oracle_scorer_keeps_top_importance():
  layer, _, ctx = synthetic_layer(seed=2)
  importance = jnp.asarray(np.random.default_rng(4).uniform(size=(B, K, S)),
                           jnp.float32)
  view = scorers.LayerView.from_cache(layer, context_length=ctx,
                                      importance=importance)
  scores = scorers.get_scorer("oracle").score(view)
  budget = 27
  keep = cache_lib.select_top(scores, layer.pos, budget, P, ctx)
  want = numpy_kept(np.where(np.asarray(layer.valid), importance, -np.inf),
                    layer.pos, np.asarray(ctx), budget)
  assert kept_positions(layer.pos, keep) == want


def test_compact_layout_and_mask_agree():
  layer, scores, ctx = synthetic_layer(seed=3)
  keep = cache_lib.select_top(scores, layer.pos, 24, P, ctx)
  small = cache_lib.compact(layer, keep, 32)
  masked_layer = cache_lib.mask_evicted(layer, keep)
  assert masked_layer.capacity == S and int(masked_layer.end) == S
  assert small.capacity == 32 and int(small.end) == 24
  pos = np.asarray(small.pos)
  assert (pos[..., 24:] == -1).all()
  for b in range(B):
    for k in range(K):
      # Kept tokens right-aligned in slots 0..23, ascending positions.
      p = pos[b, k, :24]
      n = int((p >= 0).sum())
      assert (p[:24 - n] == -1).all() and (np.diff(p[24 - n:]) > 0).all()
      # Same tokens, keys and values as the masked cache.
      mp = np.asarray(masked_layer.pos[b, k])
      slots = [int(np.flatnonzero(mp == x)[0]) for x in p[24 - n:]]
      np.testing.assert_array_equal(np.asarray(small.k[b, k, 24 - n:24]),
                                    np.asarray(layer.k[b, k, slots]))
      np.testing.assert_array_equal(np.asarray(small.v[b, k, 24 - n:24]),
                                    np.asarray(layer.v[b, k, slots]))
      assert set(p[24 - n:]) == set(mp[mp >= 0])


def test_per_head_budgets_under_jit():
  layer, scores, ctx = synthetic_layer(seed=4)
  budgets = jnp.asarray([[20, 25, 30], [22, 21, 20]], jnp.int32)
  fn = jax.jit(lambda s, p, bud, c: cache_lib.select_top(s, p, bud, P, c,
                                                         max_budget=32))
  keep = fn(scores, layer.pos, budgets, ctx)
  assert keep.shape == (B, K, 32)
  got = kept_positions(layer.pos, keep)
  for b in range(B):
    for k in range(K):
      want = numpy_kept(scores[b:b + 1, k:k + 1], layer.pos[b:b + 1, k:k + 1],
                        np.asarray(ctx[b:b + 1]), int(budgets[b, k]))
      assert got[b, k] == want[0, 0]
  with pytest.raises(ValueError, match="static max_budget"):
    jax.jit(lambda s, p, bud: cache_lib.select_top(s, p, bud, P, ctx))(
        scores, layer.pos, budgets)


# --- Memory follows the budget ---------------------------------------------

def test_compacted_memory_grows_with_budget_not_context():
  config, _ = helpers.tiny_model()
  sizes = {}
  for context in (40, 64):
    full = model_lib.init_cache(config, 1, context)
    full = model_lib.KVCache(layers=tuple(
        layer.replace(pos=jnp.broadcast_to(jnp.arange(context, dtype=jnp.int32),
                                           layer.pos.shape),
                      end=jnp.asarray(context, jnp.int32))
        for layer in full.layers))
    for budget in (20, 32):
      small = jit_evict(full, random_scores(full), None, budget,
                        (budget,) * config.num_layers)
      for layer in small.layers:
        assert layer.k.shape[2] == layer.v.shape[2] == layer.pos.shape[2] \
            == budget
        assert int(jnp.sum(layer.valid)) == budget * config.num_kv_heads
      sizes[context, budget] = small.num_bytes()
  assert sizes[40, 20] == sizes[64, 20] and sizes[40, 32] == sizes[64, 32]
  # Bytes = slots x bytes per slot (+ one int32 `end` per layer).
  per_slot = (sizes[40, 32] - sizes[40, 20]) / 12
  assert sizes[40, 20] - 4 * config.num_layers == 20 * per_slot
  assert full.num_bytes() - 4 * config.num_layers == 64 * per_slot


# --- Errors ---------------------------------------------------------------

def test_errors_are_clear():
  layer, scores, ctx = synthetic_layer()
  with pytest.raises(ValueError, match=r"budget=19 is below the minimum 20"):
    cache_lib.select_top(scores, layer.pos, 19, P, ctx)
  with pytest.raises(ValueError, match=r"budget=12 is below the minimum 14"):
    cache_lib.select_top(scores, layer.pos, 12, cache_lib.Protected(2, 12),
                         ctx)
  with pytest.raises(ValueError, match="budget must be a Python int"):
    cache_lib.select_top(scores, layer.pos, 24.0, P, ctx)
  with pytest.raises(ValueError, match="budget must be a Python int"):
    cache_lib.evict_layer(layer, scores, jnp.float32(24), 30, P, ctx)
  keep = cache_lib.select_top(scores, layer.pos, 24, P, ctx)
  with pytest.raises(ValueError, match=r"capacity=20 must be .* >= the "
                                       r"budget 24"):
    cache_lib.compact(layer, keep, 20)
  with pytest.raises(ValueError, match=r"capacity=23 must be .* >= the "
                                       r"budget 24"):
    cache_lib.evict_layer(layer, scores, 24, 23, P, ctx)
  kv = model_lib.KVCache(layers=(layer, layer))
  with pytest.raises(ValueError, match="1 score arrays for 2 layers"):
    cache_lib.evict(kv, (scores,), 24, 30, P, ctx)
  with pytest.raises(ValueError, match="3 budgets for 2 layers"):
    cache_lib.evict(kv, (scores, scores), (24, 24, 24), 30, P, ctx)


# --- Eviction inside the decode loop -------------------------------------

@dataclasses.dataclass(frozen=True)
class EvictWhenFull:
  """A DecodeHook: a global layer whose ring is about to wrap is evicted
  back to `budget` by K-norm (a cache-only scorer). Hashable (a static
  argument of decode)."""
  config: model_lib.DecoderConfig
  budget: int

  def __call__(self, kv_cache, hook_state, captured, positions):
    del captured, positions
    scorer = scorers.get_scorer("knorm")
    layers = []
    for i, layer in enumerate(kv_cache.layers):
      if self.config.layer_window(i) is not None:
        layers.append(layer)         # A ring of >= window slots needs none.
        continue
      def evict(layer, i=i):
        view = scorers.LayerView.from_cache(layer, layer=i)
        return cache_lib.evict_layer(layer, scorer.score(view), self.budget,
                                     layer.capacity, P)
      full = layer.end % layer.capacity == 0     # The next write wraps.
      layers.append(jax.lax.cond(full, evict, lambda x: x, layer))
    return model_lib.KVCache(layers=tuple(layers)), hook_state


def test_eviction_inside_decode_hook():
  config, params = helpers.tiny_model()
  full, ctx = helpers.prefilled(window_rings=True)
  budget, room, steps = 20, 4, 11
  caps = cache_lib.eviction_capacities(config, budget, room)
  scores = tuple(scorers.get_scorer("knorm").score(
      scorers.LayerView.from_cache(layer, context_length=ctx))
      for layer in full.layers)
  small = jit_evict(full, scores, ctx, budget, caps)
  logits = jnp.zeros((2, config.vocab_size)).at[:, 5].set(1.0)
  hook = EvictWhenFull(config, budget)
  tokens, final = inference.decode(config, params,
                                   jax.tree_util.tree_map(jnp.copy, small),
                                   logits, ctx,
                                   max_new_tokens=steps, eos_id=-1, hook=hook)
  assert final.capacities == caps
  # The same steps one at a time, with the hook applied between them.
  kv, token, want = small, jnp.full((2,), 5, jnp.int32), []
  hook_jit = jax.jit(lambda kv: hook(kv, None, None, None)[0])
  for step in range(steps):
    want.append(token)
    out, kv, _ = inference.extend(config, params, kv, token[:, None],
                                  (ctx + step)[:, None])
    kv = hook_jit(kv)
    token = jnp.argmax(out, axis=-1).astype(jnp.int32)
  np.testing.assert_array_equal(np.asarray(tokens), np.stack(want, axis=1))
  glob = final.layers[2]
  assert int(jnp.max(jnp.sum(glob.valid, axis=-1))) <= caps[2]
  # The newest tokens survived every eviction (they are protected).
  newest = np.asarray(glob.pos).max(axis=(1, 2))
  np.testing.assert_array_equal(newest, np.asarray(ctx) + steps - 1)
