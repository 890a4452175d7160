"""RoCo's statistics accumulated over the chunks of a chunked prefill (as
EasyKV: every query since the token entered, over the cache it saw),
against a step-by-step reference that keeps them by position in a dict."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from kvp_jax import cache as cache_lib
from kvp_jax import eviction as eviction_lib
from kvp_jax import inference
from kvp_jax import scorers
from kvp_jax.eviction import _moments
from kvp_jax.eviction import _steps
from kvp_jax.eviction import _views
from tests.eviction import conftest

PROTECTED = cache_lib.Protected()
FIELDS = _moments.MOMENT_FIELDS
tiny = conftest.tiny


def _chunked(model, prompts, c, budget, after):
  """A chunked prefill written out: after each chunk, `after(i, cache,
  views, seen, last)` (the chunk's views over the cache) returns the cache
  to go on with."""
  config, params = model.config, model.params
  batch = inference.pad_batch(prompts, 64, chunk=c)
  tokens, positions = jnp.asarray(batch.tokens), jnp.asarray(batch.positions)
  t = tokens.shape[1]
  caps = cache_lib.eviction_capacities(config, budget or t, c)
  cache = None
  for i, start in enumerate(range(0, t, c)):
    chunk = slice(start, start + c)
    if cache is None:
      _, cache, captured = inference.prefill(
          config, params, tokens[:, chunk], positions[:, chunk], caps,
          capture=True)
    else:
      _, cache, captured = inference.extend(
          config, params, cache, tokens[:, chunk], positions[:, chunk],
          capture=True)
    seen = jnp.asarray(np.clip(batch.lengths - (t - start - c), 0, None),
                       jnp.int32)
    views = _views.layer_views(config, cache, captured, positions[:, chunk],
                               seen, None, True, whole_prompt=False)
    cache = after(i, cache, views, seen, start + c >= t)
  return cache


def _reference(model, scorer, eviction, prompts, room):
  """Each slot's moments are the sum, kept in a dict by (row, head,
  position), of every chunk's attention to its token while it was
  cached."""
  sums = [dict() for _ in range(model.config.num_layers)]

  def after(i, cache, views, seen, last):
    summed = []
    for j, (view, layer) in enumerate(zip(views, cache.layers)):
      pos = np.asarray(layer.pos)
      chunk_m = np.stack([np.asarray(getattr(view, f), np.float64)
                          for f in FIELDS], axis=-1)
      total = np.zeros(chunk_m.shape, np.float64)
      for r, k, s in zip(*np.nonzero(pos >= 0)):
        key = (r, k, int(pos[r, k, s]))
        sums[j][key] = sums[j].get(key, 0.0) + chunk_m[r, k, s]
        total[r, k, s] = sums[j][key]
      summed.append(view.replace(**{
          f: jnp.asarray(total[..., n], jnp.float32)
          for n, f in enumerate(FIELDS)}))
    cache = _steps.evict_cache(
        model.config, cache, tuple(summed), scorer, eviction, seen,
        room if last else eviction.chunk_size,
        jax.random.fold_in(jax.random.key(0), i))
    for j, layer in enumerate(cache.layers):      # Evicted tokens leave.
      pos = np.asarray(layer.pos)
      kept = {(r, k, int(pos[r, k, s]))
              for r, k, s in zip(*np.nonzero(pos >= 0))}
      sums[j] = {key: v for key, v in sums[j].items() if key in kept}
    return cache

  return _chunked(model, prompts, eviction.chunk_size, eviction.budget,
                  after)


def _kept(cache):
  """Per layer, per (row, head): the positions the cache holds."""
  return [[sorted(int(p) for p in row if p >= 0)
           for row in np.asarray(layer.pos).reshape(-1, layer.pos.shape[-1])]
          for layer in cache.layers]


def test_accumulated_moments_match_the_step_by_step_reference(tiny):
  prompts = conftest.prompts()
  eviction = eviction_lib.Eviction(24, protocol="chunked", chunk_size=16,
                                   protected=PROTECTED)
  roco = scorers.get_scorer("roco")
  assert roco.accumulate_chunks
  got = eviction_lib.prefill_compressed(tiny, roco, eviction, prompts, 4)
  want = _reference(tiny, roco.for_budget(24), eviction, prompts, 4)
  assert _kept(got.cache) == _kept(want)
  # The current chunk's statistics only (the earlier behaviour) keep other
  # tokens somewhere.
  per_chunk = eviction_lib.prefill_compressed(
      tiny, scorers.get_scorer("roco", accumulate_chunks=False), eviction,
      prompts, 4)
  assert _kept(per_chunk.cache) != _kept(got.cache)


def test_without_eviction_the_sums_are_the_whole_prompts_moments(tiny):
  """Chunks over a cache that evicts nothing: each key's summed moments are
  those of every query of the prompt that sees it (global layers, where
  every earlier key is cached)."""
  prompts = conftest.prompts()
  config = tiny.config
  state = {"running": None}

  def after(i, cache, views, seen, last):
    del i, seen, last
    _, running = _moments.add_chunk(views, cache, state["running"])
    state["running"] = _moments.follow_eviction(running, cache)
    return cache

  cache = _chunked(tiny, prompts, 16, None, after)
  running = state["running"]
  whole = eviction_lib.prefill_context(tiny, prompts, capture=True).views(
      config, None)
  checked = 0
  for i, (view, layer) in enumerate(zip(whole, cache.layers)):
    if config.layer_window(i) is not None:
      continue
    m, owner = running[i]
    for r, k, s in zip(*np.nonzero(np.asarray(owner) >= 0)):
      p = int(np.asarray(owner)[r, k, s])
      (w,) = np.flatnonzero(np.asarray(view.positions)[r, k] == p)
      np.testing.assert_allclose(
          np.asarray(m)[r, k, s],
          [float(np.asarray(getattr(view, f))[r, k, w]) for f in FIELDS],
          rtol=2e-5, atol=1e-6)
      checked += 1
  assert checked > 100
