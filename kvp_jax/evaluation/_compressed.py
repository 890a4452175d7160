"""Generation and continuation scoring with a budgeted, physically evicted
KV cache.

Protocols (`Eviction.protocol`):
  "once"     the paper's: prefill the whole context with a full cache, rank
             every (layer, KV head)'s tokens once, keep the top b, decode with
             the compacted cache (new tokens are appended, never evicted).
  "chunked"  prefill in chunks of `chunk_size`; after every chunk the cache
             is evicted back to b, so the cache never holds more than
             b + chunk_size tokens per head, whatever the context length.
  "decode"   "once", then during decoding the cache is evicted back to b
             whenever `decode_interval` new tokens have been appended, so it
             stays within b + decode_interval through long generations.

Allocation (`Eviction.allocation`): "uniform" (every head keeps b), or one
total budget shared by the heads of a "layer" (b x kv_heads) or of the whole
"model" (b x layers x kv_heads), split by comparing the heads' calibrated
scores (`calibrate_scores`).

The always-kept sinks and recent tokens count inside b. Every step is a pure
jitted function of explicit arrays; budgets and capacities are static, so a
grid of budgets compiles once per budget.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kvp_jax import cache as cache_lib
from kvp_jax import inference
from kvp_jax import scorers as scorers_lib
from kvp_jax.model import DecoderConfig, KVCache, Pretrained
from kvp_jax.model import EOS_ID, layer_capacities

PROTOCOLS = ("once", "chunked", "decode")
ALLOCATIONS = ("uniform", "layer", "model")
LAST_QUERIES = 64     # Prefill queries kept for TOVA / SnapKV.


@dataclasses.dataclass(frozen=True)
class Eviction:
  """How the cache is compressed (see the module docstring).

  budget: tokens kept per (layer, KV head), sinks and recent included; None
    keeps the full cache.
  """
  budget: int | None
  protocol: str = "once"
  allocation: str = "uniform"
  chunk_size: int = 512
  decode_interval: int = 32
  num_sinks: int = 4
  num_recent: int = 16

  def __post_init__(self):
    if self.protocol not in PROTOCOLS:
      raise ValueError(f"unknown eviction protocol {self.protocol!r}; known: "
                       f"{PROTOCOLS}")
    if self.allocation not in ALLOCATIONS:
      raise ValueError(f"unknown budget allocation {self.allocation!r}; "
                       f"known: {ALLOCATIONS}")
    if self.budget is not None:
      cache_lib.check_budget(self.budget, self.num_sinks, self.num_recent)
    if self.protocol == "decode" and self.allocation != "uniform":
      raise ValueError("eviction during decoding keeps a uniform budget; use "
                       "allocation='uniform' with protocol='decode'")
    for name in ("chunk_size", "decode_interval"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")

  @property
  def full(self) -> bool:
    return self.budget is None


def _needs_capture(scorer) -> bool:
  return bool(scorer.needs & {"queries", "attention_sums"})


@functools.partial(jax.jit, static_argnames=("config", "capture_stats",
                                             "whole_prompt"))
def layer_views(config: DecoderConfig, cache: KVCache, captured,
                query_positions: jax.Array, context_length: jax.Array,
                importance: jax.Array | None, capture_stats: bool,
                whole_prompt: bool = True
                ) -> tuple[scorers_lib.LayerView, ...]:
  """What every scorer may see of each layer after a prefill.

  Args:
    cache: the filled cache.
    captured: per-layer Captured of the prefill chunk (or None).
    query_positions: [B, T] positions of the captured queries.
    context_length: [B] tokens seen per row.
    importance: [B, L, K, P] future importance by absolute position (the
      oracle's input), or None.
    capture_stats: fill queries (the last LAST_QUERIES), attention_sums,
      attention_counts and attention_sq_sums.
    whole_prompt: the captured chunk is the whole prompt. Then H2O's
      attention sums are taken over all the prompt's keys (each query's
      softmax over everything it saw, as in the model) and gathered onto
      the cache's slots; a sliding-window layer's ring holds only the
      newest keys, over which the softmax would be wrong. Otherwise (a
      chunk of a chunked prefill) they are taken over the cache's keys.
  """
  views = []
  for i, layer in enumerate(cache.layers):
    extra: dict[str, Any] = {}
    if capture_stats:
      q = captured[i].q
      window = config.layer_window(i)
      extra["queries"] = q[:, -LAST_QUERIES:]
      extra["query_positions"] = query_positions[:, -LAST_QUERIES:]
      if whole_prompt:
        k = jnp.swapaxes(captured[i].k, 1, 2)                     # [B, K, T, H]
        pos = jnp.broadcast_to(query_positions[:, None], k.shape[:3])
        moments = scorers_lib.attention_column_moments(
            q, query_positions, k, pos, window,
            softcap=config.attn_logit_softcap)                # 3 x [B, K, T]
        # Left-padded columns: position p of row b sits at column p + pad_b.
        pad = jnp.sum(query_positions < 0, axis=1)[:, None, None]
        col = jnp.clip(layer.pos + pad, 0, k.shape[2] - 1)
        moments = [jnp.where(layer.pos >= 0,
                             jnp.take_along_axis(x, col, axis=2), 0.0)
                   for x in moments]
      else:
        moments = scorers_lib.attention_column_moments(
            q, query_positions, layer.k, layer.pos, window,
            softcap=config.attn_logit_softcap)
      (extra["attention_counts"], extra["attention_sums"],
       extra["attention_sq_sums"]) = moments
    if importance is not None:
      imp = importance[:, i]                                      # [B, K, P]
      idx = jnp.clip(layer.pos, 0, imp.shape[-1] - 1)
      extra["importance"] = jnp.where(
          layer.pos >= 0, jnp.take_along_axis(imp, idx, axis=2), 0.0)
    views.append(scorers_lib.LayerView(
        keys=layer.k, values=layer.v, positions=layer.pos,
        context_length=context_length, layer=i,
        window=config.layer_window(i),
        logit_softcap=config.attn_logit_softcap, **extra))
  return tuple(views)


@jax.jit
def _scores(scorer, views, rng):
  return tuple(scorer.score(v, jax.random.fold_in(rng, i))
               for i, v in enumerate(views))


@functools.partial(jax.jit, static_argnames=("budgets", "capacities",
                                             "num_sinks", "num_recent"))
def _evict_uniform(cache, scores, context_length, budgets, capacities,
                   num_sinks, num_recent):
  return cache_lib.evict(cache, scores, budgets, capacities, context_length,
                         num_sinks, num_recent)


@functools.partial(jax.jit, static_argnames=("num_sinks", "num_recent"))
def calibrate_scores(scores: Sequence[jax.Array], positions,
                     context_length: jax.Array, num_sinks: int = 4,
                     num_recent: int = 16) -> tuple:
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
    protected = cache_lib.keep_mask_protected(p, context_length, num_sinks,
                                              num_recent)
    free = (p >= 0) & ~protected
    share = cache_lib.normalise_scores_within_head(
        jnp.where(free, s, -jnp.inf), free)
    out.append(jnp.where(protected & (p >= 0), jnp.inf, share))
  return tuple(out)


@functools.partial(jax.jit, static_argnames=("total", "scope", "num_sinks",
                                             "num_recent"))
def _adaptive_budgets(calibrated, positions, context_length, total, scope,
                      num_sinks, num_recent):
  return cache_lib.adaptive_budgets(calibrated, positions, total,
                                    context_length, scope=scope,
                                    num_sinks=num_sinks, num_recent=num_recent)


@functools.partial(jax.jit, static_argnames=("capacities", "num_sinks",
                                             "num_recent"))
def _evict_budgets(cache, scores, budgets, context_length, capacities,
                   num_sinks, num_recent):
  return cache_lib.evict(cache, scores, budgets, capacities, context_length,
                         num_sinks, num_recent)


def evict_cache(config: DecoderConfig, cache: KVCache, views, scorer,
                eviction: Eviction, context_length: jax.Array, room: int,
                rng: jax.Array) -> KVCache:
  """Scores every layer and evicts the cache to the eviction's budget,
  leaving `room` slots for tokens still to come."""
  scores = _scores(scorer, views, rng)
  e = eviction
  if e.allocation == "uniform":
    budgets = cache_lib.window_capped_budgets(config, e.budget, e.num_sinks,
                                              e.num_recent)
    capacities = cache_lib.eviction_capacities(config, budgets, room)
    return _evict_uniform(cache, scores, context_length, budgets, capacities,
                          e.num_sinks, e.num_recent)
  positions = tuple(layer.pos for layer in cache.layers)
  calibrated = calibrate_scores(scores, positions, context_length,
                                e.num_sinks, e.num_recent)
  total = e.budget * config.num_kv_heads * (
      config.num_layers if e.allocation == "model" else 1)
  budgets = _adaptive_budgets(calibrated, positions, context_length, total,
                              e.allocation, e.num_sinks, e.num_recent)
  # Static widths (the largest budget per layer, rounded up) bound memory.
  budgets = cache_lib.tighten(budgets, multiple=16, num_sinks=e.num_sinks,
                              num_recent=e.num_recent)
  capacities = cache_lib.eviction_capacities(config, budgets.widths, room)
  return _evict_budgets(cache, calibrated, budgets, context_length,
                        capacities, e.num_sinks, e.num_recent)


@dataclasses.dataclass(frozen=True)
class EvictWhenFull:
  """A decode hook: a layer whose ring is about to wrap over tokens that
  attention may still read is evicted back to `budget` (protocol "decode").

  Sliding-window layers with at least `window` slots never need it (a slot
  is reused only after its token left the window). The hook state is
  (scorer, rng); scorers that need prefill statistics cannot run here.
  """
  config: DecoderConfig
  budget: int
  num_sinks: int = 4
  num_recent: int = 16

  def __call__(self, cache: KVCache, hook_state) -> KVCache:
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
            self.config, self.budget, self.num_sinks, self.num_recent)[i]
        return cache_lib.evict_layer(layer, scores, budget, layer.capacity,
                                     num_sinks=self.num_sinks,
                                     num_recent=self.num_recent)
      full = layer.end % layer.capacity == 0        # The next write wraps.
      layers.append(jax.lax.cond(full, evict, lambda x: x, layer))
    return KVCache(layers=tuple(layers))


@dataclasses.dataclass
class Prefilled:
  """A context in the cache, ready for decoding or continuation scoring.

  first_logits: [B, V] logits at the last context token.
  cache: the (compressed) cache.
  lengths: [B] context lengths.
  peak_slots: the most slots any layer held per head along the way.
  """
  first_logits: jax.Array
  cache: KVCache
  lengths: np.ndarray
  peak_slots: int


@dataclasses.dataclass
class Context:
  """A batch of prompts prefilled once with a full cache, to be compressed
  by many (scorer, budget) pairs ("once" and "decode" protocols).

  tokens, positions: [B, T] left-padded prompts; lengths: [B].
  first_logits: [B, V]; cache: the full KVCache (never donated).
  captured: per-layer Captured q/k/v, or None without capture.
  """
  tokens: jax.Array
  positions: jax.Array
  lengths: np.ndarray
  first_logits: jax.Array
  cache: KVCache
  captured: Any
  _views: dict = dataclasses.field(default_factory=dict)

  def views(self, config: DecoderConfig, importance: np.ndarray | None):
    """Layer views (attention statistics when captured), computed once per
    importance setting and shared by every scorer."""
    key = importance is not None
    if key not in self._views:
      self._views[key] = layer_views(
          config, self.cache, self.captured, self.positions,
          jnp.asarray(self.lengths),
          None if importance is None else jnp.asarray(importance),
          self.captured is not None)
    return self._views[key]


def prefill_context(model: Pretrained, prompts: Sequence[Sequence[int]], *,
                    capture: bool, pad_multiple: int = 64) -> Context:
  """Prefills prompts into a full cache (capture: keep the q/k/v that the
  attention-based scorers' statistics need)."""
  config = model.config
  t = inference.bucket_length(max(map(len, prompts)), pad_multiple)
  tokens, positions = inference.left_pad(prompts, t)
  tokens, positions = jnp.asarray(tokens), jnp.asarray(positions)
  logits, cache, captured = inference.prefill(
      config, model.params, tokens, positions, layer_capacities(config, t),
      capture=capture)
  return Context(tokens, positions,
                 np.asarray([len(p) for p in prompts], np.int32), logits,
                 cache, captured)


def compress_context(model: Pretrained, context: Context, scorer,
                     eviction: Eviction, room: int, *,
                     importance: np.ndarray | None = None,
                     rng: jax.Array | None = None) -> Prefilled:
  """Compresses a prefilled context's full cache ("once"/"decode")."""
  config = model.config
  if eviction.protocol == "chunked":
    raise ValueError("chunked prefill cannot start from a full prefill; use "
                     "prefill_compressed")
  rng = jax.random.key(0) if rng is None else rng
  peak = max(layer.capacity for layer in context.cache.layers)
  if eviction.full:
    t = context.tokens.shape[1]
    caps = layer_capacities(config, t + room)
    grown = KVCache(layers=tuple(
        _grow(layer, cap) for layer, cap in zip(context.cache.layers, caps)))
    return Prefilled(context.first_logits, grown, context.lengths, max(caps))
  if "importance" in scorer.needs and importance is None:
    raise ValueError(f"scorer {scorer.name!r} needs the future importance")
  if _needs_capture(scorer) and context.captured is None:
    raise ValueError(f"scorer {scorer.name!r} needs prefill attention: "
                     "prefill the context with capture=True")
  views = context.views(config, importance if "importance" in scorer.needs
                        else None)
  interval = eviction.decode_interval if eviction.protocol == "decode" \
      else room
  cache = evict_cache(config, context.cache, views, scorer, eviction,
                      jnp.asarray(context.lengths), min(room, interval), rng)
  return Prefilled(context.first_logits, cache, context.lengths, peak)


def _grow(layer, capacity: int):
  """A full layer cache with room for `capacity` slots (same contents)."""
  if layer.capacity >= capacity:
    return layer
  extra = capacity - layer.capacity
  pad = lambda x, v: jnp.pad(x, [(0, 0), (0, 0), (0, extra)] +
                             [(0, 0)] * (x.ndim - 3), constant_values=v)
  return type(layer)(k=pad(layer.k, 0), v=pad(layer.v, 0),
                     pos=pad(layer.pos, -1), end=layer.end)


def prefill_compressed(model: Pretrained, scorer, eviction: Eviction,
                       prompts: Sequence[Sequence[int]], room: int, *,
                       importance: np.ndarray | None = None,
                       rng: jax.Array | None = None,
                       pad_multiple: int = 64) -> Prefilled:
  """Prefills prompts and compresses the cache per `eviction`.

  Args:
    model: the decoder.
    scorer: a Scorer (ignored for a full cache).
    eviction: budget and protocol.
    prompts: B token lists (BOS first).
    room: slots to leave for tokens appended afterwards.
    importance: [B, L, K, P] future importance by position, for the oracle.
    rng: PRNG key for random scorers.
  """
  if eviction.full or eviction.protocol != "chunked":
    context = prefill_context(
        model, prompts, capture=_needs_capture(scorer) and not eviction.full,
        pad_multiple=pad_multiple)
    return compress_context(model, context, scorer, eviction, room,
                            importance=importance, rng=rng)
  config, params = model.config, model.params
  rng = jax.random.key(0) if rng is None else rng
  if "importance" in scorer.needs and importance is None:
    raise ValueError(f"scorer {scorer.name!r} needs the future importance")
  capture = _needs_capture(scorer)
  c, b = eviction.chunk_size, eviction.budget
  t = inference.bucket_length(max(map(len, prompts)), pad_multiple)
  t = -(-t // c) * c
  tokens, positions = inference.left_pad(prompts, t)
  tokens, positions = jnp.asarray(tokens), jnp.asarray(positions)
  lengths = np.asarray([len(p) for p in prompts], np.int32)
  imp = None if importance is None else jnp.asarray(importance)
  caps = cache_lib.eviction_capacities(config, b, c)
  cache = None
  peak = 0
  for i, start in enumerate(range(0, t, c)):
    chunk = slice(start, start + c)
    if cache is None:
      logits, cache, captured = inference.prefill(
          config, params, tokens[:, chunk], positions[:, chunk], caps,
          capture=capture)
    else:
      logits, cache, captured = inference.extend(
          config, params, cache, tokens[:, chunk], positions[:, chunk],
          capture=capture)
    peak = max(peak, max(int(layer.capacity) for layer in cache.layers))
    # Tokens of each row seen so far (rows are left-padded).
    seen = jnp.asarray(np.clip(lengths - (t - start - c), 0, None), jnp.int32)
    views = layer_views(config, cache, captured, positions[:, chunk], seen,
                        imp, capture, whole_prompt=False)
    last = start + c >= t
    cache = evict_cache(config, cache, views, scorer, eviction, seen,
                        room if last else c, jax.random.fold_in(rng, i))
  return Prefilled(logits, cache, lengths, peak)


def generate_compressed(model: Pretrained, scorer, eviction: Eviction,
                        prompts: Sequence[Sequence[int]] | Context,
                        max_new_tokens: int, *,
                        importance: np.ndarray | None = None,
                        rng: jax.Array | None = None,
                        eos_id: int = EOS_ID) -> tuple[list[list[int]], dict]:
  """Greedy continuations with a compressed cache.

  `prompts` may be a Context prefilled once (shared by a grid of scorers and
  budgets) instead of token lists.
  Returns (one token list per prompt, cut after EOS; stats with the cache's
  bytes after compression and the peak slots per head).
  """
  rng = jax.random.key(0) if rng is None else rng
  if isinstance(prompts, Context):
    pre = compress_context(model, prompts, scorer, eviction, max_new_tokens,
                           importance=importance, rng=rng)
  else:
    pre = prefill_compressed(model, scorer, eviction, prompts, max_new_tokens,
                             importance=importance, rng=rng)
  stats = {"cache_bytes": pre.cache.num_bytes(), "peak_slots": pre.peak_slots}
  hook, state = None, None
  if eviction.protocol == "decode" and not eviction.full:
    if _needs_capture(scorer) or "importance" in scorer.needs:
      raise ValueError(f"scorer {scorer.name!r} reads prefill attention or the "
                       "future; it cannot evict during decoding")
    hook = EvictWhenFull(model.config, eviction.budget, eviction.num_sinks,
                         eviction.num_recent)
    state = (scorer, jax.random.fold_in(rng, 1))
  out, final = inference.decode(
      model.config, model.params, pre.cache, pre.first_logits,
      jnp.asarray(pre.lengths), max_new_tokens=max_new_tokens, eos_id=eos_id,
      hook=hook, hook_state=state)
  stats["final_cache_bytes"] = final.num_bytes()
  return [inference.cut_after_eos(row, eos_id)
          for row in np.asarray(out).tolist()], stats


def continuation_log_likelihood(model: Pretrained, scorer, eviction: Eviction,
                                contexts: Sequence[Sequence[int]] | Context,
                                continuations: Sequence[Sequence[int]], *,
                                importance: np.ndarray | None = None,
                                rng: jax.Array | None = None,
                                pad_multiple: int = 64
                                ) -> tuple[list[np.ndarray], dict]:
  """log p of each continuation token given its context, read through a
  compressed cache (teacher forcing).

  With protocol "decode" the continuation is read `decode_interval` tokens
  at a time and the cache is evicted back to the budget between pieces.
  Returns (one float array per row, stats).
  """
  rng = jax.random.key(0) if rng is None else rng
  n = max(map(len, continuations))
  width = inference.bucket_length(n, pad_multiple)
  piece = eviction.decode_interval if (eviction.protocol == "decode" and
                                       not eviction.full) else width
  if isinstance(contexts, Context):
    pre = compress_context(model, contexts, scorer, eviction,
                           min(piece, width), importance=importance, rng=rng)
  else:
    pre = prefill_compressed(model, scorer, eviction, contexts,
                             min(piece, width), importance=importance,
                             rng=rng)
  b = len(continuations)
  conts = np.zeros((b, width + 1), np.int32)
  for i, c in enumerate(continuations):
    conts[i, :len(c)] = c
  first = jax.nn.log_softmax(pre.first_logits.astype(jnp.float32), axis=-1)
  ll = [np.asarray(jnp.take_along_axis(first, jnp.asarray(conts[:, :1]),
                                       axis=1))]
  cache = pre.cache
  steps = 0
  for start in range(0, width, piece):
    stop = min(start + piece, width)
    inp = conts[:, start:stop]
    pos = pre.lengths[:, None] + np.arange(start, stop)[None]
    out, appended = inference.score_continuation(
        model.config, model.params, cache, jnp.asarray(inp),
        jnp.asarray(pos, jnp.int32), jnp.asarray(conts[:, start + 1:stop + 1]))
    ll.append(np.asarray(out))
    if stop < width and piece < width:
      cache = _evict_appended(model, appended, pos, scorer, eviction,
                              jax.random.fold_in(rng, steps))
      steps += 1
  ll = np.concatenate(ll, axis=1)
  stats = {"cache_bytes": pre.cache.num_bytes(), "peak_slots": pre.peak_slots}
  return [ll[i, :len(c)] for i, c in enumerate(continuations)], stats


def _evict_appended(model, cache, positions, scorer, eviction, rng):
  """Evicts a cache that a piece of the continuation was appended to back
  to the budget, with room for the next piece (protocol "decode")."""
  ctx = jnp.asarray(positions[:, -1] + 1, jnp.int32)
  views = tuple(scorers_lib.LayerView.from_cache(
      layer, layer=i, window=model.config.layer_window(i),
      context_length=ctx, logit_softcap=model.config.attn_logit_softcap)
                for i, layer in enumerate(cache.layers))
  return evict_cache(model.config, cache, views, scorer, eviction, ctx,
                     eviction.decode_interval, rng)
