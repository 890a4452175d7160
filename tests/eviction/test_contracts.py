"""The contracts of the eviction runtime, for every scorer under every
protocol and allocation: what is kept, and that the kept cache gives the
logits of the full cache with everything else masked out.

A table test: each (scorer, protocol, allocation) cell checks
  * the kept slots per head: the budget (or all a head holds) under uniform
    allocation, the pool's total under "layer" / "model", never more than
    the budget plus the protocol's room;
  * the protected sinks and recent tokens are all kept;
  * under uniform allocation, the scorer's ranking is honoured: no evicted
    free slot scores above a kept free slot of its head;
  * the logits after the compressed cache equal those after the full cache
    with every evicted position masked (physical eviction = masking), for
    the protocols that evict a full prefill ("once", and "decode" before
    its first decode-time eviction).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import cache as cache_lib
from kvp_jax import eviction as eviction_lib
from kvp_jax import inference
from kvp_jax import model as model_lib
from kvp_jax import policy as policy_lib
from kvp_jax import scorers
from tests.eviction import conftest

BUDGET = 24
ROOM = 3                  # Tokens appended after the eviction.
PROTECTED = cache_lib.Protected()


_prompts = conftest.prompts


def _importance(model, prompts):
  c = model.config
  return np.random.default_rng(1).random(
      (len(prompts), c.num_layers, c.num_kv_heads, max(map(len, prompts))))


def _scorer(name, model):
  if name != "kvp":
    return scorers.get_scorer(name)
  c = model.config
  agents = policy_lib.AgentConfig(hidden=16, feature_width=16, position_dim=4,
                                  max_position=128, dtype="float32",
                                  position_mode="both")
  return scorers.KVPScorer.from_artifact(policy_lib.PolicyArtifact(
      agent_config=agents,
      params=policy_lib.init_agents(agents, c.num_layers * c.num_kv_heads,
                                    c.head_dim, jax.random.key(3)),
      model_name="tiny", model_fingerprint="x", num_layers=c.num_layers,
      num_kv_heads=c.num_kv_heads, head_dim=c.head_dim, layer_start=0,
      layer_stop=c.num_layers, info={}))


SCORERS = scorers.available_scorers()
CELLS = [(s, p, a) for s in SCORERS
         for p, a in (("once", "uniform"), ("once", "layer"),
                      ("once", "model"), ("chunked", "uniform"),
                      ("decode", "uniform"))]


def _kept_positions(layer) -> list[list[set[int]]]:
  pos = np.asarray(layer.pos)
  return [[set(pos[b, k][pos[b, k] >= 0].tolist())
           for k in range(pos.shape[1])] for b in range(pos.shape[0])]


def _masked(full: model_lib.KVCache, kept: model_lib.KVCache):
  """The full cache with every position the compressed cache lost marked
  empty."""
  layers = []
  for f, c in zip(full.layers, kept.layers):
    keep = _kept_positions(c)
    pos = np.asarray(f.pos).copy()
    for b in range(pos.shape[0]):
      for k in range(pos.shape[1]):
        gone = ~np.isin(pos[b, k], list(keep[b][k]))
        pos[b, k][gone & (pos[b, k] >= 0)] = -1
    layers.append(f.replace(pos=jnp.asarray(pos)))
  return model_lib.KVCache(layers=tuple(layers))


def _next_logits(model, cache, lengths):
  tokens = jnp.asarray(np.full((len(lengths), ROOM), 5, np.int32))
  pos = jnp.asarray(np.asarray(lengths)[:, None] + np.arange(ROOM)[None],
                    jnp.int32)
  logits, _, _ = inference.extend(model.config, model.params, cache, tokens,
                                  pos)
  return np.asarray(logits)


@pytest.mark.parametrize("name,protocol,allocation", CELLS)
def test_eviction_contract(tiny, name, protocol, allocation):
  scorer = _scorer(name, tiny)
  config = tiny.config
  prompts = _prompts()
  lengths = np.asarray([len(p) for p in prompts])
  importance = _importance(tiny, prompts)
  eviction = eviction_lib.Eviction(BUDGET, protocol=protocol,
                                   allocation=allocation, chunk_size=16,
                                   decode_interval=ROOM, protected=PROTECTED)
  if protocol == "decode" and not scorer.can_evict_while_decoding:
    with pytest.raises(ValueError, match="cannot evict during decoding"):
      eviction_lib.generate_compressed(tiny, scorer, eviction, prompts, 4,
                                       importance=importance)
    return
  pre = eviction_lib.prefill_compressed(tiny, scorer, eviction, prompts, ROOM,
                                        importance=importance)
  full = eviction_lib.prefill_context(
      tiny, prompts, capture=scorer.needs_prefill_attention)
  budgets = cache_lib.window_capped_budgets(config, BUDGET, PROTECTED)
  held = [np.asarray(l.pos >= 0).sum(-1) for l in full.cache.layers]
  kept = [np.asarray(l.pos >= 0).sum(-1) for l in pre.cache.layers]
  k = config.num_kv_heads
  if protocol == "chunked":
    # Evicted as it reads: a windowed layer keeps its budget of what it has
    # read (older tokens than its window among them), not its last ring.
    held = [np.broadcast_to(lengths[:, None], h.shape) for h in held]
  for i, (got, have, b) in enumerate(zip(kept, held, budgets)):
    if allocation == "uniform":
      np.testing.assert_array_equal(got, np.minimum(have, b),
                                    err_msg=f"layer {i}")
    elif allocation == "layer":
      np.testing.assert_array_equal(got.sum(-1),
                                    np.minimum(have.sum(-1), BUDGET * k))
  if allocation == "model":
    np.testing.assert_array_equal(
        sum(g.sum(-1) for g in kept),
        np.minimum(sum(h.sum(-1) for h in held),
                   BUDGET * k * config.num_layers))
  if protocol == "chunked":
    assert pre.peak_slots <= BUDGET + eviction.chunk_size
  # The protected tokens (those a layer can still see) are all kept.
  for i, layer in enumerate(pre.cache.layers):
    window = config.layer_window(i)
    for b, row in enumerate(_kept_positions(layer)):
      n = int(lengths[b])
      seen = range(n - window, n) if window else range(n)
      must = {p for p in seen if p < PROTECTED.num_sinks or
              p >= n - PROTECTED.num_recent}
      for k_, heads in enumerate(row):
        assert must <= heads, (i, b, k_, sorted(must - heads))
  if protocol == "chunked":
    return
  views = full.views(config, importance if scorer.needs_future else None)
  if allocation == "uniform":
    scores = eviction_lib.score_layers(scorer.for_budget(BUDGET), views,
                                       jax.random.key(0))
    for i, (layer, s) in enumerate(zip(full.cache.layers, scores)):
      pos, s = np.asarray(layer.pos), np.asarray(s)
      keep = _kept_positions(pre.cache.layers[i])
      for b in range(pos.shape[0]):
        n = int(lengths[b])
        for h in range(pos.shape[1]):
          free = (pos[b, h] >= PROTECTED.num_sinks) & (
              pos[b, h] < n - PROTECTED.num_recent)
          is_kept = np.isin(pos[b, h], list(keep[b][h]))
          if (free & is_kept).any() and (free & ~is_kept).any():
            assert (s[b, h][free & is_kept].min() >=
                    s[b, h][free & ~is_kept].max()), (i, b, h)
  grown = eviction_lib.compress_context(
      tiny, full, scorer, eviction_lib.Eviction(None, protected=PROTECTED),
      ROOM).cache
  np.testing.assert_allclose(
      _next_logits(tiny, pre.cache, lengths),
      _next_logits(tiny, _masked(grown, pre.cache), lengths),
      atol=2e-5, rtol=1e-5)


def test_a_grid_compiles_once_per_budget(tiny, monkeypatch):
  """Eviction is traced once per budget: not again for another batch of the
  same bucket, nor for another scorer."""
  from kvp_jax.eviction import _steps  # pylint: disable=import-outside-toplevel
  traced = []
  real = _steps.cache_lib.evict

  def counting(*args, **kwargs):
    traced.append(1)                        # Runs only while tracing.
    return real(*args, **kwargs)

  jax.clear_caches()
  monkeypatch.setattr(_steps.cache_lib, "evict", counting)
  rng = np.random.default_rng(11)
  batches = [[list(rng.integers(3, 64, n)) for n in lengths]
             for lengths in ((50, 41), (55, 60), (44, 58))]
  budgets = (24, 32)
  for prompts in batches:                   # All in the 64-token bucket.
    for name in ("knorm", "random", "keydiff"):
      for b in budgets:
        eviction_lib.prefill_compressed(
            tiny, scorers.get_scorer(name),
            eviction_lib.Eviction(b, protected=PROTECTED), prompts, ROOM)
  assert len(traced) == len(budgets)
