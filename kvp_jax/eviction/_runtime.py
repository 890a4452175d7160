"""Generation and continuation scoring with a budgeted, physically evicted
KV cache: the protocols of kvp_jax.eviction on whole batches of prompts.
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
from kvp_jax.eviction import _moments
from kvp_jax.eviction._spec import Eviction
from kvp_jax.eviction._steps import evict_cache
from kvp_jax.eviction._steps import EvictWhenFull
from kvp_jax.eviction._views import layer_views
from kvp_jax.model import Decoder, DecoderConfig, KVCache, Pretrained
from kvp_jax.model import EOS_ID, layer_capacities, token_log_likelihood
from kvp_jax.model import project_logits


@dataclasses.dataclass
class Prefilled:
  """A context in the cache, ready for decoding or continuation scoring.

  first_logits: [B, V] logits at the last context token.
  cache: the (compressed) cache.
  lengths: [B] context lengths.
  peak_slots: the most slots any layer held per head along the way.
  peak_bytes: the most bytes the whole cache (all rows) held along the way.
  """
  first_logits: jax.Array
  cache: KVCache
  lengths: np.ndarray
  peak_slots: int
  peak_bytes: int = 0


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
  batch, logits, cache, captured = inference.prefill_prompts(
      model, prompts, capture=capture, pad_multiple=pad_multiple)
  return Context(jnp.asarray(batch.tokens), jnp.asarray(batch.positions),
                 batch.lengths, logits, cache, captured)


def compress_context(model: Pretrained, context: Context, scorer,
                     eviction: Eviction, room: int, *,
                     importance: np.ndarray | None = None,
                     rng: jax.Array | None = None) -> Prefilled:
  """Compresses a prefilled context's full cache ("once"/"decode")."""
  config = model.config
  _check_scorer(scorer, eviction)
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
    return Prefilled(context.first_logits, grown, context.lengths, max(caps),
                     grown.num_bytes())
  _check_future(scorer, importance)
  if scorer.needs_prefill_attention and context.captured is None:
    raise ValueError(f"scorer {scorer.name!r} needs prefill attention: "
                     "prefill the context with capture=True")
  views = context.views(config, importance if scorer.needs_future else None)
  interval = eviction.decode_interval if eviction.protocol == "decode" \
      else room
  cache = evict_cache(config, context.cache, views, scorer, eviction,
                      jnp.asarray(context.lengths), min(room, interval), rng)
  return Prefilled(context.first_logits, cache, context.lengths, peak,
                   max(context.cache.num_bytes(), cache.num_bytes()))


def _check_context(model: Pretrained, contexts, to_come=0,
                   what: str = "to generate") -> None:
  """inference.check_context on token lists or a prefilled Context: every
  row's context plus the tokens still to come fit in the model's context."""
  lengths = (contexts.lengths if isinstance(contexts, Context)
             else [len(c) for c in contexts])
  inference.check_context(model.config, lengths, to_come, what)


def _check_scorer(scorer, eviction: Eviction) -> None:
  """A compressed cache needs a scorer; the full cache has none."""
  if scorer is None and not eviction.full:
    raise ValueError(f"a cache evicted to budget {eviction.budget} needs a "
                     "scorer (None is the full cache's)")


def _check_future(scorer, importance) -> None:
  if scorer.needs_future and importance is None:
    raise ValueError(f"scorer {scorer.name!r} needs the future importance")


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
    scorer: a Scorer; None (or anything) for a full cache.
    eviction: budget and protocol.
    prompts: B token lists (BOS first).
    room: slots to leave for tokens appended afterwards.
    importance: [B, L, K, P] future importance by position, for the oracle.
    rng: PRNG key for random scorers.
  Raises:
    ValueError: a prompt longer than the model's context, before anything
      compiles (inference.check_context; the entries that know the tokens
      still to come check them too).
  """
  _check_scorer(scorer, eviction)
  _check_context(model, prompts)
  if eviction.full or eviction.protocol != "chunked":
    context = prefill_context(
        model, prompts,
        capture=not eviction.full and scorer.needs_prefill_attention,
        pad_multiple=pad_multiple)
    return compress_context(model, context, scorer, eviction, room,
                            importance=importance, rng=rng)
  config, params = model.config, model.params
  rng = jax.random.key(0) if rng is None else rng
  _check_future(scorer, importance)
  capture = scorer.needs_prefill_attention
  c, b = eviction.chunk_size, eviction.budget
  batch = inference.pad_batch(prompts, pad_multiple, chunk=c)
  tokens, positions = jnp.asarray(batch.tokens), jnp.asarray(batch.positions)
  lengths = batch.lengths
  t = tokens.shape[1]
  imp = None if importance is None else jnp.asarray(importance)
  caps = cache_lib.eviction_capacities(config, b, c)
  cache = None
  # RoCo (as EasyKV) reads every chunk's attention since a token entered.
  accumulate = capture and _moments.accumulates_chunks(scorer)
  running = None
  peak = peak_bytes = 0
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
    peak_bytes = max(peak_bytes, cache.num_bytes())
    # Tokens of each row seen so far (rows are left-padded).
    seen = jnp.asarray(np.clip(lengths - (t - start - c), 0, None), jnp.int32)
    views = layer_views(config, cache, captured, positions[:, chunk], seen,
                        imp, capture, whole_prompt=False)
    if accumulate:
      views, running = _moments.add_chunk(views, cache, running)
    last = start + c >= t
    cache = evict_cache(config, cache, views, scorer, eviction, seen,
                        room if last else c, jax.random.fold_in(rng, i))
    if accumulate and not last:
      running = _moments.follow_eviction(running, cache)
  return Prefilled(logits, cache, lengths, peak,
                   max(peak_bytes, cache.num_bytes()))


def _start(model: Pretrained, scorer, eviction: Eviction, contexts, room: int,
           importance, rng) -> tuple[Prefilled, Any]:
  """The compressed context, and the running attention moments of its kept
  slots when the scorer evicts while decoding by them (else None)."""
  _check_scorer(scorer, eviction)
  decoding = eviction.evicts_while_decoding
  if decoding and not scorer.can_evict_while_decoding:
    raise ValueError(f"scorer {scorer.name!r} reads prefill queries or the "
                     "future; it cannot evict during decoding")
  running = decoding and _moments.reads_moments_only(scorer)
  if running and not isinstance(contexts, Context):
    contexts = prefill_context(model, contexts, capture=True)
  if isinstance(contexts, Context):
    pre = compress_context(model, contexts, scorer, eviction, room,
                           importance=importance, rng=rng)
  else:
    pre = prefill_compressed(model, scorer, eviction, contexts, room,
                             importance=importance, rng=rng)
  if not running:
    return pre, None
  return pre, _moments.initial_moments(contexts.views(model.config, None),
                                       pre.cache)


def generate_compressed(model: Pretrained, scorer, eviction: Eviction,
                        prompts: Sequence[Sequence[int]] | Context,
                        max_new_tokens: int, *,
                        importance: np.ndarray | None = None,
                        rng: jax.Array | None = None,
                        eos_id: int = EOS_ID) -> tuple[list[list[int]], dict]:
  """Greedy continuations with a compressed cache.

  `prompts` may be a Context prefilled once (shared by a grid of scorers and
  budgets) instead of token lists. With protocol "decode" the cache is
  evicted back to the budget whenever a layer is about to wrap; a scorer
  that reads attention moments (RoCo, H2O) keeps them running through the
  decode (kvp_jax.eviction._moments).
  Returns (one token list per prompt, cut after EOS; stats with the cache's
  bytes after compression and the peak slots per head).
  """
  _check_context(model, prompts, max_new_tokens, "to generate")
  rng = jax.random.key(0) if rng is None else rng
  pre, moments = _start(model, scorer, eviction, prompts, max_new_tokens,
                        importance, rng)
  stats = {"cache_bytes": pre.cache.num_bytes(), "peak_slots": pre.peak_slots}
  hook, state = None, None
  if moments is not None:
    hook = _moments.EvictWithMoments(model.config, eviction.budget,
                                     eviction.protected)
    state = (scorer.for_decoding().for_budget(eviction.budget),
             jax.random.fold_in(rng, 1), moments)
  elif eviction.evicts_while_decoding:
    hook = EvictWhenFull(model.config, eviction.budget, eviction.protected)
    state = (scorer.for_decoding().for_budget(eviction.budget),
             jax.random.fold_in(rng, 1))
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
  _check_context(model, contexts, [len(c) for c in continuations],
                 "to score")
  rng = jax.random.key(0) if rng is None else rng
  n = max(map(len, continuations))
  width = inference.bucket_length(n, pad_multiple)
  piece = eviction.decode_interval if eviction.evicts_while_decoding \
      else width
  pre, moments = _start(model, scorer, eviction, contexts, min(piece, width),
                        importance, rng)
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
    args = (model.config, model.params, cache, jnp.asarray(inp),
            jnp.asarray(pos, jnp.int32),
            jnp.asarray(conts[:, start + 1:stop + 1]))
    if moments is None:
      out, appended = inference.score_continuation(*args)
      captured = None
    else:
      out, appended, captured = _score_piece(*args)
    ll.append(np.asarray(out))
    if stop < width and piece < width:
      cache, moments = _evict_appended(model, appended, moments, captured,
                                       pos, scorer, eviction,
                                       jax.random.fold_in(rng, steps))
      steps += 1
  ll = np.concatenate(ll, axis=1)
  stats = {"cache_bytes": pre.cache.num_bytes(), "peak_slots": pre.peak_slots}
  return [ll[i, :len(c)] for i, c in enumerate(continuations)], stats


def _evict_appended(model, cache, moments, captured, positions, scorer,
                    eviction, rng):
  """Evicts a cache that a piece of the continuation was appended to back
  to the budget, with room for the next piece (protocol "decode"); running
  attention moments (or None) follow. Returns (cache, moments)."""
  scorer = scorer.for_decoding()
  ctx = jnp.asarray(positions[:, -1] + 1, jnp.int32)
  if moments is not None:
    return _moments.evict_appended(
        model.config, cache, moments, captured,
        jnp.asarray(positions, jnp.int32), scorer.for_budget(eviction.budget),
        eviction.budget, eviction.decode_interval, eviction.protected, rng)
  views = tuple(scorers_lib.LayerView.from_cache(
      layer, layer=i, window=model.config.layer_window(i),
      context_length=ctx, logit_softcap=model.config.attn_logit_softcap)
                for i, layer in enumerate(cache.layers))
  return evict_cache(model.config, cache, views, scorer, eviction, ctx,
                     eviction.decode_interval, rng), None


@functools.partial(jax.jit, static_argnames=("config",))
def _score_piece(config: DecoderConfig, params, cache: KVCache,
                 tokens: jax.Array, positions: jax.Array, targets: jax.Array):
  """inference.score_continuation, also returning the piece's captured
  q/k/v for the running moments: (ll, cache, captured)."""
  out = Decoder(config).apply({"params": params}, tokens, positions, cache,
                              logits_at="none", capture=True)
  return (token_log_likelihood(config, params, out.hidden, targets),
          out.cache, out.captured)


@functools.partial(jax.jit, static_argnames=("config", "capture"))
def _forward_hidden(config: DecoderConfig, params, cache: KVCache,
                    tokens: jax.Array, positions: jax.Array,
                    capture: bool = False):
  """One forward pass of a chunk through a cache, without the vocabulary
  projection: ([B, T, D] final hidden states, the cache with the chunk
  appended, the chunk's captured q/k/v or None)."""
  out = Decoder(config).apply({"params": params}, tokens, positions, cache,
                              logits_at="none", capture=capture)
  return out.hidden, out.cache, out.captured


@functools.partial(jax.jit, static_argnames=("config",), donate_argnums=(0,))
def _write_logits(logits: jax.Array, config: DecoderConfig, params,
                  hidden: jax.Array, start: jax.Array) -> jax.Array:
  """logits [B, W, V] (donated: updated in place) with positions start ..
  start + T set to the projection of hidden [B, T, D]."""
  return jax.lax.dynamic_update_slice(
      logits, project_logits(config, params, hidden), (0, start, 0))


@functools.partial(jax.jit, donate_argnums=(0,))
def _write_first(logits: jax.Array, first: jax.Array) -> jax.Array:
  """logits [B, W, V] (donated) with position 0 set to first [B, V]."""
  return logits.at[:, 0].set(first.astype(jnp.float32))


def _logits_chunk(batch: int, vocab: int) -> int:
  """Positions projected at a time: a [batch, chunk, vocab] float32
  temporary of at most 512 MiB beside the [B, W, V] result."""
  return max(1, (512 << 20) // (4 * batch * vocab))


def continuation_logits(model: Pretrained, scorer, eviction: Eviction,
                        contexts: Sequence[Sequence[int]] | Context,
                        continuations: Sequence[Sequence[int]], *,
                        importance: np.ndarray | None = None,
                        rng: jax.Array | None = None,
                        pad_multiple: int = 16) -> tuple[jax.Array, dict]:
  """Teacher-forced next-token logits of each continuation, read through a
  compressed cache in one forward pass over the continuation tokens.

  logits[:, 0] are the logits after the context (the prefill's), and
  logits[:, t] for t >= 1 come from reading continuations[:, :t]: position t
  is the distribution of continuations[:, t]. Only the continuation
  positions get a vocabulary projection (never the context's). With
  protocol "decode" the continuation is read `decode_interval` tokens at a
  time with an eviction back to the budget in between, as
  continuation_log_likelihood does; otherwise in one pass.

  Args:
    model: the decoder.
    scorer: a Scorer; None (or anything) for a full cache.
    eviction: budget and protocol (Eviction(None): the full cache).
    contexts: B token lists (BOS first), or a Context prefilled once.
    continuations: B token lists, each non-empty.
    importance: [B, L, K, P] future importance (the oracle's).
    rng: PRNG key for random scorers.
    pad_multiple: the width W is the longest continuation rounded up to it.
  Returns:
    (logits [B, W, V] float32, W >= max continuation length; positions past
    a row's continuation are padding, stats with cache_bytes and
    peak_slots). Memory: B x W x V x 4 bytes, plus a chunk of positions
    (at most 512 MiB) while it is written.
  Raises:
    ValueError: an empty continuation.
  """
  if not continuations or min(map(len, continuations)) < 1:
    raise ValueError("continuation_logits needs a non-empty continuation "
                     "for every row")
  _check_context(model, contexts, [len(c) for c in continuations],
                 "to score")
  rng = jax.random.key(0) if rng is None else rng
  width = inference.bucket_length(max(map(len, continuations)), pad_multiple)
  piece = eviction.decode_interval if eviction.evicts_while_decoding \
      else width
  pre, moments = _start(model, scorer, eviction, contexts, min(piece, width),
                        importance, rng)
  conts = np.zeros((len(continuations), width), np.int32)
  for i, c in enumerate(continuations):
    conts[i, :len(c)] = c
  # Written in place, a chunk of positions at a time: the peak is one
  # [B, W, V] array, never a second copy of it.
  batch, vocab = pre.first_logits.shape
  out = _write_first(jnp.zeros((batch, width, vocab), jnp.float32),
                     pre.first_logits)                            # [B, W, V]
  chunk = _logits_chunk(batch, vocab)
  cache = pre.cache
  for step, start in enumerate(range(0, width - 1, piece)):
    stop = min(start + piece, width - 1)
    pos = pre.lengths[:, None] + np.arange(start, stop)[None]
    hidden, cache, captured = _forward_hidden(
        model.config, model.params, cache, jnp.asarray(conts[:, start:stop]),
        jnp.asarray(pos, jnp.int32), capture=moments is not None)
    for c in range(0, stop - start, chunk):
      out = _write_logits(out, model.config, model.params,
                          hidden[:, c:c + chunk], jnp.int32(start + 1 + c))
    if stop < width - 1 and piece < width:
      cache, moments = _evict_appended(model, cache, moments, captured, pos,
                                       scorer, eviction,
                                       jax.random.fold_in(rng, step))
  stats = {"cache_bytes": pre.cache.num_bytes(), "peak_slots": pre.peak_slots}
  return out, stats
