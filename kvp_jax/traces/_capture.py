"""Recording traces: greedy continuation, then keys, values and future
importance of every (layer, KV head), computed on the device.

A batch of prompts is prefilled once with capture on (post-RoPE q, k, v of
every layer), continued greedily, and the continuation is then read through
the prompt's cache with capture on again. The two captures together cover
the whole sequence, so no second full forward is needed.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kvp_jax import inference
from kvp_jax.model import Decoder, DecoderConfig, KVCache, Pretrained
from kvp_jax.model import EOS_ID
from kvp_jax.traces._importance import future_importance
from kvp_jax.traces._importance import value_write_norms

# What a trace's importance measures (traces.target): the paper's future
# attention mass, or that mass weighted by each token's write through W_O.
TARGETS = ("attention", "value_weighted")


@dataclasses.dataclass
class Trace:
  """One recorded sample, in position order (token j at index j).

  tokens: [T] int32 prompt + continuation.
  prompt_length: P, the true prompt length.
  split_points: [R] int32 prompt lengths the importance was computed for.
  importance: [L, K, R, T] float32; zero for keys at or after each split.
  keys, values: [L, K, T, H] (post-RoPE keys as cached), or None when the
    store keeps only what is needed to recompute them.
  """
  tokens: np.ndarray
  prompt_length: int
  split_points: np.ndarray
  importance: np.ndarray
  keys: np.ndarray | None = None
  values: np.ndarray | None = None

  @property
  def length(self) -> int:
    return int(self.tokens.shape[0])


def _position_order(positions: jax.Array) -> jax.Array:
  """[B, T] column indices that sort each row by position, padding last."""
  key = jnp.where(positions >= 0, positions, jnp.iinfo(jnp.int32).max)
  return jnp.argsort(key, axis=1, stable=True)


@functools.partial(jax.jit, static_argnames=("config", "with_kv", "target"))
def _trace_arrays(config: DecoderConfig, params, cache: KVCache,
                  prompt_captured, prompt_positions: jax.Array,
                  continuation: jax.Array, continuation_positions: jax.Array,
                  split_points: jax.Array, with_kv: bool,
                  target: str = "attention"):
  """Captures the continuation through the prompt cache; importance of all
  layers (`target`: TARGETS). Returns position-ordered tokens [B, T],
  importance [B, L, K, R, T] and (with_kv) keys/values [B, L, K, T, H]."""
  out = Decoder(config).apply({"params": params}, continuation,
                              continuation_positions, cache, logits_at="none",
                              capture=True)
  positions = jnp.concatenate([prompt_positions, continuation_positions], 1)
  order = _position_order(positions)                              # [B, T]
  importance, keys, values = [], [], []
  for layer, (pc, cc) in enumerate(zip(prompt_captured, out.captured)):
    q = jnp.concatenate([pc.q, cc.q], axis=1)
    k = jnp.concatenate([pc.k, cc.k], axis=1)                     # [B, T, K, H]
    v = jnp.concatenate([pc.v, cc.v], axis=1)
    norms = value_write_norms(
        v, params[f"layer_{layer}"]["attn"]["o_proj"]["kernel"]) if (
            target == "value_weighted") else None                 # [B, T, K, G]
    imp = future_importance(q, k, positions, split_points,
                            config.layer_window(layer),
                            config.attn_logit_softcap,
                            value_norms=norms)                    # [B, R, K, T]
    imp = jnp.take_along_axis(imp, order[:, None, None, :], axis=3)
    importance.append(jnp.swapaxes(imp, 1, 2))                    # [B, K, R, T]
    if with_kv:
      for arr, dst in ((k, keys), (v, values)):
        arr = jnp.take_along_axis(arr, order[:, :, None, None], axis=1)
        dst.append(jnp.swapaxes(arr, 1, 2))                       # [B, K, T, H]
  return (jnp.stack(importance, 1),
          jnp.stack(keys, 1) if with_kv else None,
          jnp.stack(values, 1) if with_kv else None)


def record_traces(model: Pretrained, prompts: Sequence[Sequence[int]],
                  split_points: Sequence[Sequence[int]] | None, *,
                  max_new_tokens: int, with_kv: bool = True,
                  kv_dtype=jnp.bfloat16, pad_multiple: int = 128,
                  continuations: Sequence[Sequence[int]] | None = None,
                  num_random_splits: int | Sequence[int] = 0,
                  min_prompt_length: int | Sequence[int] = 32,
                  rngs: Sequence[np.random.Generator] | None = None,
                  target: str = "attention",
                  num_split_slots: int = 0) -> list[Trace]:
  """Records traces for a batch of prompts.

  Args:
    model: the frozen decoder.
    prompts: B token lists (BOS included).
    split_points: per prompt, extra split points to compute importance for
      (the true prompt length is always the first); may be None.
    max_new_tokens: length of the greedy continuation (stops at EOS).
    with_kv: also return keys and values ("stored" feature source).
    kv_dtype: dtype keys and values are returned in.
    continuations: optional given continuations (e.g. a dialogue's reference
      reply) used instead of greedy decoding.
    num_random_splits: random split points drawn uniformly in
      [min_prompt_length, T) per trace (the paper's Algorithm 1 for
      dialogues); one number for every prompt, or one per prompt (a trace
      with fewer split points than the batch's most has fewer in its Trace).
    min_prompt_length: the same, one for every prompt or one per prompt.
    rngs: one numpy Generator per prompt for those draws.
    target: what the importance measures: "attention" (the paper's future
      attention mass) or "value_weighted" (that mass, each query head's
      weighted by ||W_O^g v_j||; kvp_jax.traces._importance).
    num_split_slots: compute at least this many split points per prompt
      (padding repeats the true split; a fixed width keeps one compiled
      program when prompts have different numbers of split points).
  Returns:
    B Traces.
  """
  if target not in TARGETS:
    raise ValueError(f"target {target!r}: must be one of {', '.join(TARGETS)}")
  counts = _per_prompt(num_random_splits, len(prompts))
  lows = _per_prompt(min_prompt_length, len(prompts))
  config, params = model.config, model.params
  b = len(prompts)
  batch, logits, cache, captured = inference.prefill_prompts(
      model, prompts, max_new_tokens, capture=True, pad_multiple=pad_multiple)
  positions, lengths = batch.positions, batch.lengths
  if continuations is None:
    generated, _ = inference.decode(
        config, params, cache, logits,
        jnp.asarray(lengths), max_new_tokens=max_new_tokens, eos_id=EOS_ID)
    conts = [inference.cut_after_eos(row) for row in np.asarray(generated)]
  else:
    conts = [list(c)[:max_new_tokens] for c in continuations]
  width = max_new_tokens           # Static: one compile per prompt bucket.
  cont = np.zeros((b, width), np.int32)
  cont_pos = np.full((b, width), -1, np.int32)
  for i, c in enumerate(conts):
    cont[i, :len(c)] = c
    cont_pos[i, :len(c)] = lengths[i] + np.arange(len(c))
  totals = lengths + np.asarray([len(c) for c in conts], np.int32)

  rngs = rngs or [np.random.default_rng(i) for i in range(b)]
  splits = []
  for i in range(b):
    row = [int(lengths[i])] + [int(s) for s in (split_points or [[]] * b)[i]]
    low = min(lows[i], int(totals[i]) - 1)
    row += [int(s) for s in rngs[i].integers(low, totals[i], counts[i])]
    splits.append(row)
  num_splits = max(max(map(len, splits)), num_split_slots)
  split_arr = np.asarray([r + [r[0]] * (num_splits - len(r)) for r in splits],
                         np.int32)
  importance, keys, values = _trace_arrays(
      config, params, cache, captured, jnp.asarray(positions),
      jnp.asarray(cont), jnp.asarray(cont_pos), jnp.asarray(split_arr),
      with_kv, target)
  importance = np.asarray(importance)
  if with_kv:
    keys = np.asarray(keys.astype(kv_dtype))
    values = np.asarray(values.astype(kv_dtype))
  traces = []
  for i in range(b):
    t = int(totals[i])
    traces.append(Trace(
        tokens=np.asarray(list(prompts[i]) + conts[i], np.int32),
        prompt_length=int(lengths[i]),
        split_points=split_arr[i, :len(splits[i])],
        importance=importance[i, :, :, :len(splits[i]), :t],
        keys=keys[i, :, :, :t] if with_kv else None,
        values=values[i, :, :, :t] if with_kv else None))
  return traces


def _per_prompt(value: int | Sequence[int], b: int) -> list[int]:
  """One setting per prompt, from one for all or one per prompt."""
  if isinstance(value, (int, np.integer)):
    return [int(value)] * b
  if len(value) != b:
    raise ValueError(f"{len(value)} per-prompt settings for {b} prompts")
  return [int(v) for v in value]
