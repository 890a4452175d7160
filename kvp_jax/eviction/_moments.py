"""Running attention moments: eviction during decoding for the rules that
read attention statistics (RoCo's temporal mean and spread, H2O's sums).

After a full prefill those statistics come from the captured prompt queries
(kvp_jax.scorers.attention_column_moments). While decoding, every new
token's query adds its attention to the same per-slot accumulators, so a
rule rescoring the cache mid-generation reads the attention each cached
token received from every query that has seen it, prompt and generated
(EasyKV keeps RoCo's statistics this way during generation). The
accumulators live in the decode hook's state, one array per layer aligned
with the layer's slots, and follow the slots through every eviction:

  initial_moments   the kept slots' prefill statistics after compression
                    (matched by position)
  accumulate        new queries' attention added to a layer's moments
  evict_layer       a layer and its moments evicted and compacted together
  EvictWithMoments  the decode hook: accumulate the step's attention, evict
                    a layer about to wrap
  evict_appended    the same for a teacher-forced continuation read piece
                    by piece (protocol "decode" of continuation scoring)
  add_chunk /       in a chunked prefill, for a scorer that accumulates
  follow_eviction   (RoCo, as EasyKV: statistics over every chunk since the
                    token entered): a chunk's attention added to what the
                    kept tokens received before, then the totals carried
                    to the slots the eviction keeps

Shapes: M = [batch, kv_heads, slots, 3] float32 per layer, the last axis
(counts, sums, sq_sums); P = [batch, kv_heads, slots] int32 the positions
the statistics belong to (-1: none).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp

from kvp_jax import cache as cache_lib
from kvp_jax import scorers as scorers_lib
from kvp_jax.model import DecoderConfig, KVCache, LayerCache

# What a LayerView gets from the running moments.
MOMENT_FIELDS = ("attention_counts", "attention_sums", "attention_sq_sums")


def reads_moments_only(scorer) -> bool:
  """The scorer reads no prefill input but the attention moments, so the
  running moments let it evict during decoding (RoCo, H2O)."""
  prefill = scorer.needs & scorers_lib.PREFILL_ATTENTION
  return bool(prefill) and prefill <= set(MOMENT_FIELDS) and (
      not scorer.needs_future)


def _match(old_pos: jax.Array, old: jax.Array, new_pos: jax.Array):
  """[B, K, S_new, 3]: the statistics of each new slot's position among the
  old slots (zeros where none holds it)."""
  same = (old_pos[:, :, None, :] == new_pos[:, :, :, None]) & (
      new_pos[:, :, :, None] >= 0)                       # [B, K, S_new, S]
  return jnp.einsum("bkns,bksc->bknc", same.astype(jnp.float32), old,
                    precision=jax.lax.Precision.HIGHEST)


@jax.jit
def initial_moments(views: Sequence[scorers_lib.LayerView],
                    cache: KVCache) -> tuple[tuple[jax.Array, jax.Array], ...]:
  """Per layer (M, P) of a compressed cache from the full prefill's views.

  Args:
    views: the full cache's LayerViews with attention_counts, sums and
      sq_sums (kvp_jax.eviction.layer_views with capture).
    cache: the cache compressed from it (its slots' positions are a subset).
  """
  out = []
  for view, layer in zip(views, cache.layers):
    old = jnp.stack([getattr(view, f).astype(jnp.float32)
                     for f in MOMENT_FIELDS], axis=-1)
    out.append((_match(view.positions, old, layer.pos), layer.pos))
  return tuple(out)


def accumulate(config: DecoderConfig, index: int, layer: LayerCache,
               moments: jax.Array, owner: jax.Array, q: jax.Array,
               positions: jax.Array) -> jax.Array:
  """Layer `index`'s moments after new queries read it.

  Slots whose token changed since the moments were taken (owner != the
  layer's positions: a ring write) restart from zero; then every slot each
  query may see adds one count, its group-mean probability and its square.

  Args:
    layer: the layer's cache with the queries' own tokens written.
    moments, owner: M and P of the layer (see the module docstring).
    q: [batch, T, heads, head_dim] the queries (Captured.q).
    positions: [batch, T] int32 their positions (-1: padding).
  """
  moments = jnp.where((owner == layer.pos)[..., None], moments, 0.0)
  counts, sums, sq_sums = scorers_lib.attention_column_moments(
      q, positions, layer.k, layer.pos, config.layer_window(index),
      block=q.shape[1], softcap=config.attn_logit_softcap)
  return moments + jnp.stack([counts, sums, sq_sums], axis=-1)


def evict_layer(config: DecoderConfig, index: int, layer: LayerCache,
                moments: jax.Array, scorer, rng: jax.Array, budget: int,
                capacity: int, protected: cache_lib.Protected):
  """(layer, moments) evicted to `budget` by a scorer reading the moments,
  both compacted to `capacity` slots the same way."""
  view = scorers_lib.LayerView.from_cache(
      layer, layer=index, window=config.layer_window(index),
      logit_softcap=config.attn_logit_softcap,
      **{f: moments[..., j] for j, f in enumerate(MOMENT_FIELDS)})
  scores = scorer.score(view, rng)
  keep = cache_lib.select_top(scores, layer.pos, budget, protected)
  kept = cache_lib.compact(layer, keep, capacity)
  stats = cache_lib.compact(layer.replace(k=moments, v=moments), keep,
                            capacity).k
  return kept, stats


@dataclasses.dataclass(frozen=True)
class EvictWithMoments:
  """A decode hook for scorers that read attention moments (protocol
  "decode"): after every step the step's attention joins the running
  moments; a layer whose ring is about to wrap over tokens attention may
  still read is evicted back to `budget` by the scorer reading them, and
  the moments are compacted with the cache.

  State: (scorer, rng, per-layer (M, P)) (see initial_moments).
  """
  config: DecoderConfig
  budget: int
  protected: cache_lib.Protected
  captures = True                  # The decode loop passes the step's q.

  def __call__(self, cache: KVCache, hook_state, captured, positions):
    scorer, rng, state = hook_state
    budgets = cache_lib.window_capped_budgets(self.config, self.budget,
                                              self.protected)
    layers, new_state = [], []
    for i, (layer, (moments, owner)) in enumerate(zip(cache.layers, state)):
      moments = accumulate(self.config, i, layer, moments, owner,
                           captured[i].q, positions)
      window = self.config.layer_window(i)
      if window is None or layer.capacity < window:
        evict = lambda args, i=i: evict_layer(
            self.config, i, args[0], args[1], scorer,
            jax.random.fold_in(rng, args[0].end), budgets[i],
            args[0].capacity, self.protected)
        full = layer.end % layer.capacity == 0      # The next write wraps.
        layer, moments = jax.lax.cond(full, evict, lambda x: x,
                                      (layer, moments))
      layers.append(layer)
      new_state.append((moments, layer.pos))
    return KVCache(layers=tuple(layers)), (scorer, rng, tuple(new_state))


def evict_appended(config: DecoderConfig, cache: KVCache, state, captured,
                   positions: jax.Array, scorer, budget: int, room: int,
                   protected: cache_lib.Protected, rng: jax.Array):
  """A cache that a piece of a continuation was just appended to (its
  queries in `captured`, at `positions` [batch, T]), with its moments
  brought up to date and every layer evicted back to `budget` with `room`
  free slots: the teacher-forced counterpart of EvictWithMoments.
  Returns (cache, state)."""
  budgets = cache_lib.window_capped_budgets(config, budget, protected)
  capacities = cache_lib.eviction_capacities(config, budgets, room)
  layers, new_state = [], []
  for i, (layer, (moments, owner)) in enumerate(zip(cache.layers, state)):
    moments = accumulate(config, i, layer, moments, owner, captured[i].q,
                         positions)
    layer, moments = evict_layer(config, i, layer, moments, scorer,
                                 jax.random.fold_in(rng, i), budgets[i],
                                 capacities[i], protected)
    layers.append(layer)
    new_state.append((moments, layer.pos))
  return KVCache(layers=tuple(layers)), tuple(new_state)


def accumulates_chunks(scorer) -> bool:
  """The scorer reads attention moments accumulated over every chunk of a
  chunked prefill since each token entered (not only the current chunk's
  queries): RoCo's accumulate_chunks."""
  return bool(getattr(scorer, "accumulate_chunks", False)) and (
      reads_moments_only(scorer))


@jax.jit
def add_chunk(views: Sequence[scorers_lib.LayerView], cache: KVCache,
              running) -> tuple[tuple[scorers_lib.LayerView, ...], tuple]:
  """A chunk's views with each slot's moments summed with those its token
  received from earlier chunks.

  Args:
    views: the chunk's LayerViews (its queries' moments over the cache).
    cache: the cache the chunk was appended to (the views' slots).
    running: per layer (M, P) of the earlier chunks, or None (the first).
  Returns:
    (the views with the summed moments, per layer (M, P) of the sums).
  """
  out, totals = [], []
  for j, (view, layer) in enumerate(zip(views, cache.layers)):
    m = jnp.stack([getattr(view, f).astype(jnp.float32)
                   for f in MOMENT_FIELDS], axis=-1)          # [B, K, S, 3]
    if running is not None:
      m = m + _match(running[j][1], running[j][0], layer.pos)
    out.append(view.replace(**{f: m[..., c]
                               for c, f in enumerate(MOMENT_FIELDS)}))
    totals.append((m, layer.pos))
  return tuple(out), tuple(totals)


@jax.jit
def follow_eviction(totals, cache: KVCache) -> tuple:
  """Per layer (M, P) of an evicted cache: each kept slot's sums (matched by
  position), zeros for an empty slot."""
  return tuple((_match(p, m, layer.pos), layer.pos)
               for (m, p), layer in zip(totals, cache.layers))
