"""What a scorer may see of each layer after a prefill: the cache's keys,
values and positions, plus, when captured, the last prefill queries and
every slot's received attention, and, for the oracle, the future importance.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from kvp_jax import scorers as scorers_lib
from kvp_jax.model import DecoderConfig, KVCache

LAST_QUERIES = 64     # Prefill queries kept for TOVA / SnapKV.


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
