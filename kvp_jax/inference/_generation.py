"""Greedy generation and continuation scoring over an explicit KV cache.

The work is split into jitted stages so a caller can change the cache in
between (kvp_jax.evaluation compresses it after the prefill):

  prefill   -> (first-token logits, cache)
  decode    -> generated tokens (a lax.while_loop; stops when every row hit EOS)
  score     -> log-likelihood of a continuation read through the cache

Rows are left-padded (inference/_batching.py).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from kvp_jax.model import Decoder, DecoderConfig, KVCache, init_cache
from kvp_jax.model import PAD_ID, token_log_likelihood

# A hook run inside the decode loop after every step:
#   (cache, hook_state, captured, positions) -> (cache, hook_state)
# captured: the step's per-layer Captured q/k/v when the hook's `captures`
# attribute is true, else None; positions: [batch, 1] int32 of the step's
# token. The state is carried through the loop (same shapes every step).
# kvp_jax.eviction uses it to evict during decoding.
DecodeHook = Callable[[KVCache, Any, Any, jax.Array], tuple[KVCache, Any]]


@functools.partial(jax.jit, static_argnames=("config", "capacities",
                                             "capture"))
def prefill(config: DecoderConfig, params, tokens: jax.Array,
            positions: jax.Array, capacities: tuple[int, ...],
            capture: bool = False):
  """Runs the prompt through the decoder into a fresh cache.

  Args:
    tokens, positions: [batch, T] left-padded prompt (positions -1 on pads).
    capacities: slots per layer of the cache to build.
    capture: also return the per-layer Captured q/k/v.
  Returns:
    (logits [batch, vocab] at the last prompt token, KVCache, captured|None).
  """
  cache = init_cache(config, tokens.shape[0], capacities)
  out = Decoder(config).apply({"params": params}, tokens, positions, cache,
                              fresh=True, logits_at="last", capture=capture)
  return out.logits, out.cache, out.captured


@functools.partial(jax.jit, static_argnames=("config", "capture"))
def extend(config: DecoderConfig, params, cache: KVCache, tokens: jax.Array,
           positions: jax.Array, capture: bool = False):
  """Appends a chunk to a non-empty cache (chunked prefill).

  Returns (logits [batch, vocab] at the chunk's last token, cache, captured).
  """
  out = Decoder(config).apply({"params": params}, tokens, positions, cache,
                              logits_at="last", capture=capture)
  return out.logits, out.cache, out.captured


def decode(config: DecoderConfig, params, cache: KVCache,
           first_logits: jax.Array, next_position: jax.Array, *,
           max_new_tokens: int, eos_id: int, hook: DecodeHook | None = None,
           hook_state: Any = None):
  """Greedy decoding from a filled cache.

  Args:
    cache: the cache after the prompt.
    first_logits: [batch, vocab] logits at the prompt's last token.
    next_position: [batch] int32 position of the first generated token.
    max_new_tokens: tokens to generate per row (static).
    eos_id: a row stops after emitting it; later columns are PAD.
    hook: optional DecodeHook applied to the cache after each step.
    hook_state: its initial state.
  Returns:
    (tokens [batch, max_new_tokens] int32, final cache).
  """
  tokens, cache, _ = decode_with_state(
      config, params, cache, first_logits, next_position,
      max_new_tokens=max_new_tokens, eos_id=eos_id, hook=hook,
      hook_state=hook_state)
  return tokens, cache


# The cache is not donated: callers may decode several times from one cache
# (a grid of budgets over one prefill); the loop still updates in place.
@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens",
                                             "eos_id", "hook"))
def decode_with_state(config: DecoderConfig, params, cache: KVCache,
                      first_logits: jax.Array, next_position: jax.Array, *,
                      max_new_tokens: int, eos_id: int,
                      hook: DecodeHook | None = None, hook_state: Any = None):
  """decode(), also returning the hook's final state."""
  batch = first_logits.shape[0]
  decoder = Decoder(config)
  capture = bool(getattr(hook, "captures", False))

  def cond(state):
    step, _, _, _, done, _, _ = state
    return (step < max_new_tokens) & ~jnp.all(done)

  def body(state):
    step, out, token, pos, done, cache, hook_state = state
    out = out.at[:, step].set(jnp.where(done, PAD_ID, token))
    done = done | (token == eos_id)
    result = decoder.apply({"params": params}, token[:, None], pos[:, None],
                           cache, logits_at="last", capture=capture)
    cache = result.cache
    if hook is not None:
      cache, hook_state = hook(cache, hook_state, result.captured,
                               pos[:, None])
    token = jnp.argmax(result.logits, axis=-1).astype(jnp.int32)
    return step + 1, out, token, pos + 1, done, cache, hook_state

  first = jnp.argmax(first_logits, axis=-1).astype(jnp.int32)
  state = (jnp.zeros((), jnp.int32),
           jnp.full((batch, max_new_tokens), PAD_ID, jnp.int32), first,
           next_position.astype(jnp.int32), jnp.zeros((batch,), bool), cache,
           hook_state)
  _, out, _, _, _, cache, hook_state = jax.lax.while_loop(cond, body, state)
  return out, cache, hook_state


@functools.partial(jax.jit, static_argnames=("config", "score_from"))
def score_continuation(config: DecoderConfig, params, cache: KVCache | None,
                       tokens: jax.Array, positions: jax.Array,
                       targets: jax.Array, score_from: int = 0) -> jax.Array:
  """Teacher-forced log-likelihoods of a continuation read through a cache.

  Args:
    cache: the context's cache (possibly compressed), or None to score a
      whole sequence with a plain forward.
    tokens, positions: [batch, T] the continuation's inputs.
    targets: [batch, T] the token each position should predict.
    score_from: first chunk index whose prediction is scored (static); the
      vocabulary projection runs only from there on.
  Returns:
    ([batch, T - score_from] float32 log p(target), the cache with the chunk
    appended, or None without a cache).
  """
  out = Decoder(config).apply({"params": params}, tokens, positions, cache,
                              logits_at="none")
  return token_log_likelihood(config, params, out.hidden[:, score_from:],
                              targets[:, score_from:]), out.cache
