"""Batch-level entry points: token lists in, tokens or log-likelihoods out."""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from kvp_jax.inference._batching import check_context
from kvp_jax.inference._batching import pad_batch
from kvp_jax.inference._generation import decode, prefill, score_continuation
from kvp_jax.model import EOS_ID, Pretrained, layer_capacities


def prefill_prompts(model: Pretrained, prompts: Sequence[Sequence[int]],
                    room: int = 0, *, capture: bool = False,
                    pad_multiple: int = 64):
  """Left-pads prompts to their bucket and prefills them into a full cache.

  Args:
    model: the decoder.
    prompts: B token lists (BOS first).
    room: slots each global layer keeps free for tokens still to come.
    capture: also return each layer's q/k/v (for attention statistics).
    pad_multiple: the bucket size (fewer shapes, fewer compiles).
  Returns:
    (batch: PaddedBatch with [B, T] tokens and positions and [B] lengths,
     logits [B, V] at the last prompt token, the KVCache, per-layer Captured
     or None).
  Raises:
    ValueError: a prompt longer than the model's context (check_context).
  """
  check_context(model.config, [len(p) for p in prompts])
  batch = pad_batch(prompts, pad_multiple)
  capacities = layer_capacities(model.config, batch.tokens.shape[1] + room)
  logits, cache, captured = prefill(
      model.config, model.params, jnp.asarray(batch.tokens),
      jnp.asarray(batch.positions), capacities, capture=capture)
  return batch, logits, cache, captured


def generate(model: Pretrained, prompts: Sequence[Sequence[int]],
             max_new_tokens: int, *, eos_id: int = EOS_ID,
             pad_multiple: int = 64) -> list[list[int]]:
  """Greedy continuations of a batch of token prompts with a full cache.

  Prompts are left-padded to a multiple of `pad_multiple` (fewer compiles).
  Returns one list of generated ids per prompt, cut after EOS.
  Raises:
    ValueError: max_new_tokens < 1, or a prompt plus max_new_tokens longer
      than the model's context (check_context), before anything compiles.
  """
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  check_context(model.config, [len(p) for p in prompts], max_new_tokens)
  batch, logits, cache, _ = prefill_prompts(model, prompts, max_new_tokens,
                                            pad_multiple=pad_multiple)
  out, _ = decode(model.config, model.params, cache, logits,
                  jnp.asarray(batch.lengths), max_new_tokens=max_new_tokens,
                  eos_id=eos_id)
  return [cut_after_eos(row, eos_id) for row in np.asarray(out).tolist()]


def cut_after_eos(ids: Sequence[int], eos_id: int = EOS_ID) -> list[int]:
  ids = list(ids)
  return ids[:ids.index(eos_id) + 1] if eos_id in ids else ids


def sequence_log_likelihood(model: Pretrained, tokens: Sequence[int],
                            skip: int) -> np.ndarray:
  """log p of tokens[skip+1:] given everything before, with a full forward.

  The predictions scored are those made at positions skip .. len-2.
  Returns a float32 array of len(tokens) - skip - 1 values.
  Raises:
    ValueError: nothing to score, or more tokens than the model's context
      (check_context), before anything compiles.
  """
  n = len(tokens)
  check_context(model.config, [n])
  if not 0 <= skip < n - 1:
    raise ValueError(f"skip={skip} leaves nothing to score in {n} tokens")
  ids = jnp.asarray(tokens, jnp.int32)[None]
  positions = jnp.arange(n, dtype=jnp.int32)[None]
  targets = jnp.concatenate([ids[:, 1:], jnp.zeros((1, 1), jnp.int32)], 1)
  ll, _ = score_continuation(model.config, model.params, None, ids,
                             positions, targets, score_from=skip)
  return np.asarray(ll[0, :n - 1 - skip])
