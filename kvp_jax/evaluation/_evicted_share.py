"""The share of future importance a scorer evicts at fixed cache budgets.

For one (layer, KV head) with cached slots j (importance I_j >= 0, the
future attention token j receives), a scorer keeps at budget b what
kvp_jax.cache.select_top keeps: the protected slots (the first num_sinks
positions and the last num_recent of the context, counted inside b), then
the highest scores (ties to the newer token, NaN scores last). Its evicted
share is

    share(b) = sum_{j evicted} I_j / sum_{j cached} I_j      in [0, 1].

A head counts at budget b only when it is informative (some importance on
the slots that can be evicted at all, the `informative` test of the
attention-cost suite) and it holds more than b tokens (else nothing is
evicted, whatever the scorer). Shares are aggregated per head over samples
(arithmetic mean), then over heads by a geometric mean, for the global
layers, the sliding-window (local) layers and all layers:

  evicted_share(scores, importance, positions, lengths)  one layer ->
      [batch, kv_heads, budgets] shares (NaN: not counted)
  aggregate_evicted_share(shares, global_layers)  [..., layers, kv_heads,
      budgets] -> geometric means per budget
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kvp_jax import cache as cache_lib
from kvp_jax import objective

BUDGETS = (64, 128, 256, 512)
# Heads whose evictable importance (oracle cost) is below this count as
# uninformative, as in the attention-cost suite.
_INFORMATIVE = 1e-30


@functools.partial(jax.jit, static_argnames=("budgets", "protected"))
def evicted_share(scores: jax.Array, importance: jax.Array,
                  positions: jax.Array, context_length: jax.Array,
                  budgets: Sequence[int], protected: cache_lib.Protected
                  ) -> tuple[jax.Array, jax.Array]:
  """Share of one layer's cached importance evicted at each budget.

  Args:
    scores: [batch, kv_heads, slots] float, higher = keep (a scorer's).
    importance: [batch, kv_heads, slots] float >= 0, the future importance
      of each slot's token (a LayerView's importance).
    positions: [batch, kv_heads, slots] int32, -1 = empty.
    context_length: [batch] int32, tokens seen.
    budgets: a static (hashable) tuple of Python ints, each >= the
      protected set's size (tokens kept per head, protected ones included).
    protected: the protected tokens (a static kvp_jax.cache.Protected).
  Returns:
    (share, counted):
      share: [batch, kv_heads, len(budgets)] float32, the evicted fraction
        of the head's cached importance; NaN where not counted.
      counted: [batch, kv_heads, len(budgets)] bool, the head is
        informative and holds more than that budget's tokens.
  """
  budgets = tuple(cache_lib.check_budget(b, protected) for b in budgets)
  valid = positions >= 0
  protected = cache_lib.keep_mask_protected(positions, context_length,
                                            protected)
  imp = jnp.where(valid, importance.astype(jnp.float32), 0.0)
  score = jnp.where(jnp.isnan(scores), -jnp.inf, scores.astype(jnp.float32))
  # select_top's order: valid, protected, score descending, newer first.
  *_, ranked_imp = jax.lax.sort((~valid, ~protected, -score, -positions, imp),
                                dimension=2, num_keys=4)
  total = jnp.sum(imp, axis=-1)                                     # [B, K]
  evicted = jnp.stack([jnp.sum(ranked_imp[..., b:], axis=-1)
                       for b in budgets], axis=-1)                  # [B, K, N]
  held = jnp.sum(valid, axis=-1)                                    # [B, K]
  evictable = valid & ~protected
  informative = objective.oracle_cost(importance, evictable) > _INFORMATIVE
  counted = informative[..., None] & (
      held[..., None] > jnp.asarray(budgets, jnp.int32))
  share = jnp.where(counted, evicted / jnp.where(counted, total[..., None],
                                                 1.0), jnp.nan)
  return share, counted


def aggregate_evicted_share(shares: np.ndarray, global_layers: Sequence[int],
                            *, eps: float = 1e-12) -> dict[str, np.ndarray]:
  """Geometric means over heads of each head's mean share over samples.

  Args:
    shares: [..., layers, kv_heads, budgets] float, NaN where not counted
      (evicted_share per layer stacked on axis -3; leading axes are samples,
      e.g. [samples, layers, kv_heads, budgets]).
    global_layers: indices of the global-attention layers (5, 11, 17 for
      Gemma 3 270M: the layers whose config.layer_window(l) is None); the
      others are the local (sliding-window) layers.
    eps: shares are floored at eps before the logarithm (an exact 0, e.g.
      an oracle evicting only zero-importance tokens, would give -inf).
  Returns:
    dict with "all", "global", "local": [budgets] float64 geometric means
    over the heads counted in at least one sample (NaN where none is), and
    "heads_all", "heads_global", "heads_local": [budgets] int, how many
    heads each mean is over.
  Raises:
    ValueError: a global layer index outside the layers.
  """
  shares = np.asarray(shares, np.float64)
  layers = shares.shape[-3]
  shares = shares.reshape((-1,) + shares.shape[-3:])            # [S, L, K, N]
  glob = np.zeros(layers, bool)
  for layer in global_layers:
    if not 0 <= layer < layers:
      raise ValueError(f"global layer {layer} outside 0..{layers - 1}")
    glob[layer] = True
  present = np.any(~np.isnan(shares), axis=0)                      # [L, K, N]
  per_head = np.where(
      present, np.nansum(shares, axis=0) /
      np.maximum(np.sum(~np.isnan(shares), axis=0), 1), np.nan)   # [L, K, N]
  log = np.log(np.maximum(per_head, eps))
  out = {}
  for name, layer_mask in (("all", np.ones(layers, bool)), ("global", glob),
                           ("local", ~glob)):
    use = present & layer_mask[:, None, None]                      # [L, K, N]
    heads = np.sum(use, axis=(0, 1))                               # [N]
    total = np.sum(np.where(use, log, 0.0), axis=(0, 1))
    out[name] = np.where(heads > 0, np.exp(total / np.maximum(heads, 1)),
                         np.nan)
    out[f"heads_{name}"] = heads
  return out
