"""One eviction step: score every layer, allocate the budget, compact.

Every step is a pure jitted function of explicit arrays; budgets and
capacities are static, so a grid of budgets compiles once per budget.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from kvp_jax import cache as cache_lib
from kvp_jax import scorers as scorers_lib
from kvp_jax.eviction._spec import Eviction
from kvp_jax.model import DecoderConfig, KVCache


@jax.jit
def score_layers(scorer, views, rng: jax.Array) -> tuple[jax.Array, ...]:
  """Every layer's scores, [batch, kv_heads, slots] each; layer i draws its
  randomness from fold_in(rng, i)."""
  return tuple(scorer.score(v, jax.random.fold_in(rng, i))
               for i, v in enumerate(views))


@functools.partial(jax.jit, static_argnames=("uniform", "capacities",
                                             "protected"))
def _evict(cache, scores, context_length, adaptive, uniform, capacities,
           protected):
  """One compaction: per-layer static int budgets (`uniform`, adaptive
  None) or an allocator's Budgets (`adaptive`, uniform None)."""
  budgets = uniform if adaptive is None else adaptive
  return cache_lib.evict(cache, scores, budgets, capacities, protected,
                         context_length)


@functools.partial(jax.jit, static_argnames=("protected",))
def calibrate_scores(scores: Sequence[jax.Array], positions,
                     context_length: jax.Array,
                     protected: cache_lib.Protected) -> tuple:
  """Puts every head's scores on one scale for adaptive allocation.

  Each free slot's score becomes its share of the head's softmax mass over
  its free slots (the always-kept sinks and recent tokens are left out: they
  cost every head the same, and a learned policy never scored them in
  training). Under a Plackett-Luce policy that share is the probability
  that the token is ranked first among the head's free tokens; for the
  oracle's log-importance it is the token's share of the head's future
  attention. A head whose mass sits on a few tokens gives them large shares
  and wins slots from a head whose mass is spread out. Protected slots keep
  +inf (they are kept anyway).
  """
  out = []
  for s, p in zip(scores, positions):
    always = cache_lib.keep_mask_protected(p, context_length, protected)
    free = (p >= 0) & ~always
    share = cache_lib.normalise_scores_within_head(
        jnp.where(free, s, -jnp.inf), free)
    out.append(jnp.where(always & (p >= 0), jnp.inf, share))
  return tuple(out)


@functools.partial(jax.jit, static_argnames=("total", "scope", "protected"))
def _adaptive_budgets(calibrated, positions, context_length, total, scope,
                      protected):
  return cache_lib.adaptive_budgets(calibrated, positions, total,
                                    context_length, protected=protected,
                                    scope=scope)


def evict_cache(config: DecoderConfig, cache: KVCache, views, scorer,
                eviction: Eviction, context_length: jax.Array, room: int,
                rng: jax.Array) -> KVCache:
  """Scores every layer and evicts the cache to the eviction's budget,
  leaving `room` slots for tokens still to come."""
  scores = score_layers(scorer.for_budget(eviction.budget), views, rng)
  e = eviction
  if e.allocation == "uniform":
    budgets = cache_lib.window_capped_budgets(config, e.budget, e.protected)
    capacities = cache_lib.eviction_capacities(config, budgets, room)
    return _evict(cache, scores, context_length, None, budgets, capacities,
                  e.protected)
  positions = tuple(layer.pos for layer in cache.layers)
  calibrated = calibrate_scores(scores, positions, context_length,
                                e.protected)
  total = e.budget * config.num_kv_heads * (
      config.num_layers if e.allocation == "model" else 1)
  budgets = _adaptive_budgets(calibrated, positions, context_length, total,
                              e.allocation, e.protected)
  # Static widths (the largest budget per layer, rounded up) bound memory.
  budgets = cache_lib.tighten(budgets, e.protected, multiple=16)
  capacities = cache_lib.eviction_capacities(config, budgets.widths, room)
  return _evict(cache, calibrated, context_length, budgets, None, capacities,
                e.protected)


@dataclasses.dataclass(frozen=True)
class EvictWhenFull:
  """A decode hook: a layer whose ring is about to wrap over tokens that
  attention may still read is evicted back to `budget` (protocol "decode").

  Sliding-window layers with at least `window` slots never need it (a slot
  is reused only after its token left the window). The hook state is
  (scorer, rng), returned unchanged; scorers that need prefill statistics
  run with _moments.EvictWithMoments instead.
  """
  config: DecoderConfig
  budget: int
  protected: cache_lib.Protected

  def __call__(self, cache: KVCache, hook_state, captured=None,
               positions=None):
    del captured, positions
    scorer, rng = hook_state
    layers = []
    for i, layer in enumerate(cache.layers):
      window = self.config.layer_window(i)
      if window is not None and layer.capacity >= window:
        layers.append(layer)
        continue

      def evict(layer, i=i):
        view = scorers_lib.LayerView.from_cache(
            layer, layer=i, window=self.config.layer_window(i),
            logit_softcap=self.config.attn_logit_softcap)
        scores = scorer.score(view, jax.random.fold_in(rng, layer.end))
        budget = cache_lib.window_capped_budgets(
            self.config, self.budget, self.protected)[i]
        return cache_lib.evict_layer(layer, scores, budget, layer.capacity,
                                     self.protected)
      full = layer.end % layer.capacity == 0        # The next write wraps.
      layers.append(jax.lax.cond(full, evict, lambda x: x, layer))
    return KVCache(layers=tuple(layers)), hook_state
