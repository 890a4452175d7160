"""The Gemma-3-style decoder: embed, L pre/post-normed blocks, tied logits."""

from __future__ import annotations

from typing import Any, NamedTuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from kvp_jax.model import _layers
from kvp_jax.model._attention import Attention, Captured
from kvp_jax.model._config import DecoderConfig
from kvp_jax.model._kv_cache import KVCache, LayerCache

LogitsAt = Union[str, jax.Array]


class DecoderOutput(NamedTuple):
  """What a decoder call returns.

  logits: float32 logits at the positions asked for ([batch, vocab] for
    "last", [batch, T, vocab] for "all", [batch, M, vocab] for an index
    array), or None for "none".
  hidden: [batch, T, width] final-normed hidden states (the input of the
    output projection), for callers that project only some of them.
  cache: the updated KVCache, or None when called without one.
  captured: per-layer Captured projections when capture=True, else None.
  """
  logits: jax.Array | None
  hidden: jax.Array
  cache: KVCache | None
  captured: tuple[Captured, ...] | None


class Block(nn.Module):
  """x + post_norm(attn(pre_norm(x))), then the same around the MLP."""
  config: DecoderConfig
  layer: int

  @nn.compact
  def __call__(self, x, positions, cache: LayerCache | None, fresh, capture):
    c = self.config
    norm = lambda name: _layers.RMSNorm(c.rms_eps, c.param_dtype, name=name)
    h = norm("pre_attention_norm")(x)
    h, cache, captured = Attention(c, self.layer, name="attn")(
        h, positions, cache, fresh, capture)
    x = x + norm("post_attention_norm")(h)
    h = norm("pre_ffw_norm")(x)
    h = _layers.FeedForward(c.width, c.ffw_hidden, c.param_dtype,
                            name="mlp")(h)
    x = x + norm("post_ffw_norm")(h)
    return x, cache, captured


class Decoder(nn.Module):
  """Gemma 3 decoder over an explicit KV cache.

  Call modes:
    * `cache=None`: a pure forward over the chunk (perplexity, traces).
    * `cache=init_cache(...)`, `fresh=True`: prefill; attention reads only the
      chunk, which is then written into the cache.
    * `cache=...`, `fresh=False`: chunked prefill or decoding; attention reads
      the cache and the chunk, and the chunk is appended.
  Rows are left-padded: padding tokens carry position -1.
  """
  config: DecoderConfig

  @nn.compact
  def __call__(self, tokens: jax.Array, positions: jax.Array,
               cache: KVCache | None = None, *, fresh: bool = False,
               logits_at: LogitsAt = "all",
               capture: bool = False) -> DecoderOutput:
    """Runs the decoder on a chunk.

    Args:
      tokens: [batch, T] int32.
      positions: [batch, T] int32 absolute positions; -1 marks padding.
      cache: KVCache or None (see class docstring).
      fresh: the cache is empty; attend within the chunk only.
      logits_at: "all", "last", "none", or an int array [batch, M] of chunk
        indices whose logits to compute. The vocabulary projection is the
        most expensive layer, so ask only for what is needed.
      capture: return each layer's post-RoPE q, k, v.
    Returns:
      DecoderOutput.
    """
    c = self.config
    dtype = jnp.dtype(c.compute_dtype)
    embedder = _layers.Embedder(c.vocab_size, c.width, c.param_dtype,
                                name="embedder")
    x = embedder.encode(tokens, dtype)                            # [B, T, D]
    if cache is not None and cache.num_layers != c.num_layers:
      raise ValueError(f"cache has {cache.num_layers} layers, model has "
                       f"{c.num_layers}")
    new_layers, captured = [], []
    for i in range(c.num_layers):
      layer_cache = None if cache is None else cache.layers[i]
      x, layer_cache, cap = Block(c, i, name=f"layer_{i}")(
          x, positions, layer_cache, fresh, capture)
      new_layers.append(layer_cache)
      captured.append(cap)
    x = _layers.RMSNorm(c.rms_eps, c.param_dtype, name="final_norm")(x)

    if isinstance(logits_at, str):
      if logits_at == "all":
        selected = x
      elif logits_at == "last":
        selected = x[:, -1]
      elif logits_at == "none":
        selected = None
      else:
        raise ValueError(f"logits_at must be 'all', 'last', 'none' or an index "
                         f"array, got {logits_at!r}")
    else:
      selected = jnp.take_along_axis(x, logits_at[..., None], axis=1)
    logits = None
    if selected is not None:
      logits = embedder.decode(selected)
      if c.final_logit_softcap is not None:
        cap = c.final_logit_softcap
        logits = jnp.tanh(logits / cap) * cap
    return DecoderOutput(
        logits=logits, hidden=x,
        cache=None if cache is None else KVCache(layers=tuple(new_layers)),
        captured=tuple(captured) if capture else None)


def init_params(config: DecoderConfig, key: jax.Array) -> Any:
  """Random parameters of a decoder (tests, speed benchmarks)."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  return Decoder(config).init(key, tokens, tokens)["params"]


def output_embedding(params: Any) -> jax.Array:
  """[vocab, width] matrix of the tied output projection."""
  return params["embedder"]["input_embedding"]


def project_logits(config: DecoderConfig, params: Any,
                   hidden: jax.Array) -> jax.Array:
  """[..., width] final hidden states (DecoderOutput.hidden) -> [..., vocab]
  float32 logits: the decoder's tied output projection and final soft-cap,
  the same operations as Decoder's logits."""
  emb = output_embedding(params).astype(hidden.dtype)             # [V, D]
  logits = jnp.einsum("...d,vd->...v", hidden, emb,
                      preferred_element_type=jnp.float32)
  if config.final_logit_softcap is not None:
    cap = config.final_logit_softcap
    logits = jnp.tanh(logits / cap) * cap
  return logits


def token_log_likelihood(config: DecoderConfig, params: Any,
                         hidden: jax.Array, targets: jax.Array,
                         chunk: int = 256) -> jax.Array:
  """log p(target) from final hidden states, a chunk of positions at a time.

  Projecting [batch, T] positions onto a 262k vocabulary at once would need a
  [batch, T, vocab] array; this never holds more than `chunk` positions.

  Args:
    hidden: [batch, T, width] (DecoderOutput.hidden).
    targets: [batch, T] int32 next-token ids.
  Returns:
    [batch, T] float32 log-probabilities.
  """
  b, t, d = hidden.shape
  pad = (-t) % chunk
  h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
  y = jnp.pad(targets, ((0, 0), (0, pad)))
  h = h.reshape(b, -1, chunk, d).swapaxes(0, 1)                   # [C, B, c, D]
  y = y.reshape(b, -1, chunk).swapaxes(0, 1)                      # [C, B, c]

  def one(args):
    hc, yc = args
    logits = project_logits(config, params, hc)                  # [B, c, V]
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, yc[..., None], axis=-1)[..., 0]
    return picked - lse

  out = jax.lax.map(one, (h, y))                                  # [C, B, c]
  return out.swapaxes(0, 1).reshape(b, -1)[:, :t]
