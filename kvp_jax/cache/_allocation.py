"""Budget allocators: how many tokens each (layer, KV head) keeps.

They wrap any scorer: an allocator reads the per-slot scores and returns
budgets, which `evict` then applies with the same scores.

  uniform_budgets    every (layer, head) keeps b (the paper's protocol).
  window_capped_budgets
                     the same, a sliding-window layer capped at its window.
  adaptive_budgets   one total budget shared by the KV heads of a layer
                     (scope="layer") or by every head of the model
                     (scope="model"), split by the scores.

The adaptive rule. Per batch row and pool of heads:
  1. every head first gets its reserve: its protected slots (sinks and
     recent tokens) and its best-scored other slots up to
     protected.size tokens (fewer only if it holds fewer tokens);
  2. the N = total - sum(reserves) remaining slots go to the N highest scores
     among all the other non-protected slots of the pool (ties: newer token,
     then lower head index), a head taking at most `max_per_head` in all;
  3. a head's budget is its reserve plus its share of those N.
Within a head the kept tokens are then exactly its top budget by score, as
`select_top` picks them, so step 2 is the same as greedily handing one more
slot at a time to the head whose next token scores highest. The totals are
exact whenever the pool holds at least `total` tokens (and the per-head cap
leaves room); otherwise every head keeps all it can.

Calibration: step 2 compares scores of different heads (and layers), so it
is meaningful only when scores are on a common scale: a score should be the
same amount of "keep-worthiness" whichever head it comes from.
  * Scores that estimate an attention or importance mass qualify directly:
    the oracle's future importance (attention summed over future queries,
    each head's attention rows sum to one), H2O's accumulated attention,
    SnapKV's window attention.
  * Raw policy logits do not: a Plackett-Luce policy is trained on rankings
    within its head, so each agent's logits are defined only up to a
    head-specific offset (and scale). Calibrate them per head first:
    `normalise_scores_within_head` applies a softmax over the head's valid
    slots, turning logits into the head's predicted share of attention
    (under the Plackett-Luce model, the probability that a token comes first
    in the head's ranking). Shares of different heads are comparable (each
    head's sum to one), so a head whose predicted importance is concentrated
    on a few tokens gets few slots and a head that spreads it gets more.
    Alternatively fit a monotone calibration per head (e.g. isotonic
    regression of the oracle importance on the logits) on validation traces.
  * Heuristic scores (key norms, negated ages) have no common scale; use
    them with uniform budgets.

Memory. Shapes must be static, so a layer compacted with per-head budgets
reserves `widths[l]` slots for every head (the largest budget the allocator
can give a head of that layer; see `Budgets`), heads with smaller budgets
leaving slots empty. An adaptive cache of a total T over P heads therefore
occupies widths * P slots, not T: set `max_per_head` to bound it (the cost is
a constrained allocation), or, outside jit, call `tighten` to shrink the
widths to the largest budget actually given.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kvp_jax.cache._eviction import Budgets, check_budget, context_length_of
from kvp_jax.cache._eviction import keep_mask_protected
from kvp_jax.cache._protected import Protected
from kvp_jax.cache._slots import rank_descending

SCOPES = ("layer", "model")


def uniform_budgets(num_layers: int, budget: int,
                    protected: Protected) -> tuple[int, ...]:
  """Every head of every layer keeps `budget` tokens: one static int per
  layer, to pass as `evict(..., budgets=...)`."""
  return (check_budget(budget, protected),) * num_layers


def window_capped_budgets(config, budget: int,
                          protected: Protected) -> tuple[int, ...]:
  """Uniform budget b per head, but a sliding-window layer keeps at most its
  window: its cache never holds more (a ring), and attention reads no more.
  A window below the protected sinks + recent tokens is rounded up to them.

  Args:
    config: the DecoderConfig (layer_window(i) is None for a global layer).
    budget: tokens each head keeps.
    protected: the always-kept tokens.
  Returns:
    one static budget per layer, to pass as `evict(..., budgets=...)`.
  """
  budget = check_budget(budget, protected)
  floor = protected.size
  return tuple(min(budget, max(config.layer_window(i) or budget, floor))
               for i in range(config.num_layers))


def normalise_scores_within_head(scores: jax.Array,
                                 valid: jax.Array) -> jax.Array:
  """Per-head softmax: raw scores -> each slot's share of the head's mass.

  Args:
    scores: [batch, kv_heads, slots] float (e.g. policy logits).
    valid: [batch, kv_heads, slots] bool, slots holding a token.
  Returns:
    [batch, kv_heads, slots] float32: softmax over the head's valid slots
    with finite scores (summing to one per head); +inf stays +inf (a slot a
    rule always keeps), a valid -inf slot gets 0, empty slots -inf.
  """
  s = scores.astype(jnp.float32)
  finite = valid & jnp.isfinite(s)
  top = jnp.max(jnp.where(finite, s, -jnp.inf), axis=-1, keepdims=True)
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  e = jnp.where(finite, jnp.exp(jnp.where(finite, s, 0.0) - top), 0.0)
  total = jnp.sum(e, axis=-1, keepdims=True)
  share = e / jnp.where(total > 0, total, 1.0)
  share = jnp.where(valid & (s == jnp.inf), jnp.inf, share)
  return jnp.where(valid, share, -jnp.inf)


def _check_int(value, what: str, lowest: int) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(f"{what} must be a Python int, got {value!r}")
  if value < lowest:
    raise ValueError(f"{what}={value} is below the minimum {lowest}")
  return int(value)


def _layer_terms(scores, positions, context_length, protected, max_per_head):
  """A layer's reserves and the slots it offers to the shared pool."""
  lowest = protected.size
  s = scores.shape[-1]
  valid = positions >= 0
  always = keep_mask_protected(positions, context_length, protected)
  free = valid & ~always
  score = jnp.where(jnp.isnan(scores), -jnp.inf, scores.astype(jnp.float32))
  rank = rank_descending(score, positions, free)        # Free slots first.
  n_valid = jnp.sum(valid, axis=-1, dtype=jnp.int32)               # [B, K]
  n_protected = jnp.sum(always, axis=-1, dtype=jnp.int32)
  reserve = jnp.minimum(n_valid, lowest)
  reserved_free = jnp.maximum(reserve - n_protected, 0)
  limit = s if max_per_head is None else max_per_head
  offered = free & (rank >= reserved_free[..., None]) & (
      rank < (limit - n_protected)[..., None])
  return reserve, offered, score


def _share_pool(terms, positions, total):
  """Hands the pool's remaining slots to its top scores.

  Args:
    terms: per layer (reserve [B, K], offered [B, K, S_l], score [B, K, S_l]).
    positions: per layer [B, K, S_l].
    total: the pool's total budget (int).
  Returns:
    Per layer [B, K] int32 budgets.
  """
  batch = terms[0][0].shape[0]
  flat = lambda x: x.reshape(batch, -1)
  offered = jnp.concatenate([flat(t[1]) for t in terms], axis=1)   # [B, P]
  score = jnp.concatenate([flat(t[2]) for t in terms], axis=1)
  pos = jnp.concatenate([flat(p) for p in positions], axis=1)
  head, start = [], 0
  for t in terms:
    k, s = t[1].shape[1:]
    head.append(jnp.broadcast_to(start + jnp.arange(k)[:, None], (k, s))
                .reshape(-1))
    start += k
  head = jnp.broadcast_to(jnp.concatenate(head)[None], pos.shape)
  remaining = total - sum(jnp.sum(t[0], axis=-1) for t in terms)     # [B]
  iota = jnp.broadcast_to(jnp.arange(pos.shape[1], dtype=jnp.int32), pos.shape)
  *_, order = jax.lax.sort((~offered, -score, -pos, head, iota), dimension=1,
                           num_keys=4)
  grank = jnp.argsort(order, axis=1)
  chosen = offered & (grank < remaining[:, None])
  budgets, start = [], 0
  for t in terms:
    k, s = t[1].shape[1:]
    got = chosen[:, start:start + k * s].reshape(batch, k, s)
    budgets.append((t[0] + jnp.sum(got, axis=-1, dtype=jnp.int32))
                   .astype(jnp.int32))
    start += k * s
  return budgets


def adaptive_budgets(scores: Sequence[jax.Array],
                     positions: Sequence[jax.Array],
                     total_budget: int | Sequence[int],
                     context_length: jax.Array | None = None, *,
                     protected: Protected, scope: str = "model",
                     max_per_head: int | None = None) -> Budgets:
  """Splits a total budget among heads by their calibrated scores.

  See the module docstring for the rule and for how scores must be
  calibrated. Jittable (the totals, scope and cap are static).

  Args:
    scores: per layer [batch, kv_heads, S_l] float, on a common scale.
    positions: per layer [batch, kv_heads, S_l] int32 (the caches' `pos`).
    total_budget: scope="model": tokens kept over all layers and heads (an
      int); scope="layer": tokens kept by each layer's heads together (an
      int for every layer, or one per layer). Protected tokens count inside.
    context_length: [batch] int32; by default one past the newest position.
    scope: "layer" or "model", the pool of heads that shares a total.
    protected: the always-kept tokens.
    max_per_head: optional static cap on a head's budget; it also bounds the
      compacted cache's width (memory).
  Returns:
    Budgets: per layer [batch, kv_heads] int32 budgets, each >=
    protected.size (or all the head's tokens when it holds fewer), summing to the
    total per row and pool (unless the pool holds fewer tokens), each <= the
    head's valid tokens; widths = static per-layer bounds on those budgets.
  Raises:
    ValueError: unknown scope, mismatched lengths, a total below the pool's
      minimum (heads x protected.size), a bad max_per_head.
  """
  if scope not in SCOPES:
    raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
  n = len(scores)
  if len(positions) != n:
    raise ValueError(f"{len(scores)} score arrays but {len(positions)} "
                     f"position arrays")
  lowest = protected.size
  if max_per_head is not None:
    max_per_head = _check_int(max_per_head, "max_per_head", lowest)
  if context_length is None:
    context_length = jnp.max(jnp.stack(
        [context_length_of(p) for p in positions]), axis=0)
  terms = [_layer_terms(s, p, context_length, protected, max_per_head)
           for s, p in zip(scores, positions)]
  heads = [s.shape[1] for s in scores]
  if scope == "model":
    total = _check_int(total_budget, "total_budget", lowest * sum(heads))
    budgets = _share_pool(terms, positions, total)
    totals = (total,) * n
  else:
    if isinstance(total_budget, (list, tuple)):
      if len(total_budget) != n:
        raise ValueError(f"{len(total_budget)} totals for {n} layers")
      totals = tuple(total_budget)
    else:
      totals = (total_budget,) * n
    totals = tuple(_check_int(t, f"total_budget of layer {l}", lowest * k)
                   for l, (t, k) in enumerate(zip(totals, heads)))
    budgets = [_share_pool([t], [p], total)[0]
               for t, p, total in zip(terms, positions, totals)]
  widths = []
  for s, total in zip(scores, totals):
    width = min(s.shape[-1], total)
    if max_per_head is not None:
      width = min(width, max_per_head)
    widths.append(max(width, lowest))
  return Budgets(per_head=tuple(budgets), widths=tuple(widths))


def tighten(budgets: Budgets, protected: Protected,
            multiple: int = 1) -> Budgets:
  """Budgets whose widths are the largest budget actually given per layer
  (rounded up to a multiple, to limit recompilations). Reads the budgets on
  the host: call it outside jit, between allocation and eviction."""
  lowest = protected.size
  widths = []
  for b in budgets.per_head:
    top = max(int(np.max(np.asarray(b))), lowest)
    widths.append(-(-top // multiple) * multiple)
  return Budgets(per_head=budgets.per_head, widths=tuple(widths))
