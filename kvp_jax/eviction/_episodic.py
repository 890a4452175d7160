"""Episodic KV caches: one compressed cache per episode of a conversation.

EpiCache's online half (the offline half, episodes and routing, is in
_episodes.py; the layer budgets in _sensitivity.py):

  prefill_episodes   the whole conversation prefilled block by block, once
                     per episode (the episodes are the rows of one batch),
                     the cache evicted back to its budget after every block.
                     The scorer reads the episode's observation window: the
                     queries of the episode's medoid text placed right after
                     the block (positions seen .. seen + W - 1), against the
                     cache. The medoid's own keys are never kept: its forward
                     reads the cache and discards what it would write. So each
                     episode's cache keeps what its medoid attends to, and a
                     head never holds more than budget + block slots.
  answer_questions   each question decoded through its episode's cache (the
                     row of the batch that route() picked).
  KVzipMaxScorer     the paper's in-episode score (ml-epicache, after KVzip):
                     the most attention any query of the observation window,
                     in any head of the GQA group, puts on a token; no
                     pooling. episode_scorer("kvzip"), the default;
                     episode_scorer("snapkv") is SnapKV's window mean with
                     its width-5 pool (the earlier default).
  MedoidBlendScorer  beyond the paper: a learned query-free score (KVP)
                     combined with the medoid's attention in log space.

Per-layer budgets (`layer_budgets`, e.g. from _sensitivity.layer_budgets)
replace the uniform budget; every layer keeps at least the protected set.
Shapes: E episodes (batch rows), W observation tokens, Q questions.
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
from kvp_jax.eviction._runtime import Prefilled
from kvp_jax.eviction._spec import Eviction
from kvp_jax.eviction._steps import _evict
from kvp_jax.eviction._steps import score_layers
from kvp_jax.model import Decoder, DecoderConfig, EOS_ID, KVCache, Pretrained

# What the episodic prefill can give a scorer beyond the cache.
_GIVES = frozenset({"queries", "rng"})
# The in-episode scorers (episode_scorer): the paper's first.
EPISODE_SCORERS = ("kvzip", "snapkv")


@dataclasses.dataclass(frozen=True)
class KVzipMaxScorer(scorers_lib.Scorer):
  """EpiCache's in-episode score (KVzip-style): the most attention the slot
  gets from any query of the observation window in any query head of its
  KV head's group.

  s_j = max over queries t and group heads g of softmax_j(q_tg . k_j), the
  softmax over the cached keys query t may see (causal, within a sliding
  window, with the model's logit soft-cap), as ml-epicache's
  _get_score_flatten (amax over the group and the patched prompt's
  queries, softmax over the cache's keys only); no averaging, no pooling.
  Padding queries add nothing. Slots at or after the first query's position
  (the window itself; none in the episodic prefill, which never caches the
  medoid) score +inf, as SnapKV's. [batch, kv_heads, slots].
  """
  name = "kvzip_max"
  needs = frozenset({"queries"})

  def _score(self, view, rng):
    del rng
    qpos = view.query_positions                                      # [B, T]
    probs = scorers_lib.last_queries_attention(
        view.queries, qpos, view.keys, view.positions, view.window,
        view.logit_softcap)                                   # [B, K, G, T, S]
    score = jnp.max(probs, axis=(2, 3))                            # [B, K, S]
    start = jnp.min(jnp.where(qpos >= 0, qpos, jnp.iinfo(jnp.int32).max),
                    axis=1)                                         # [B]
    in_window = view.valid & (view.positions >= start[:, None, None])
    return jnp.where(in_window, jnp.inf, score)


def episode_scorer(name: str = "kvzip") -> scorers_lib.Scorer:
  """The in-episode scorer named `name` (EPISODE_SCORERS): "kvzip", the
  paper's KVzipMaxScorer, or "snapkv", SnapKV's pooled window mean."""
  if name == "kvzip":
    return KVzipMaxScorer()
  if name == "snapkv":
    return scorers_lib.get_scorer("snapkv")
  raise ValueError(f"unknown in-episode scorer {name!r}; known: "
                   f"{EPISODE_SCORERS}")


@functools.partial(jax.jit, static_argnames=("config",))
def _observe(config: DecoderConfig, params, cache: KVCache,
             tokens: jax.Array, positions: jax.Array) -> tuple[jax.Array, ...]:
  """The observation window's queries over the cache, cache unchanged.

  Args:
    tokens, positions: [E, W] left-padded observation (positions -1 on pads).
  Returns:
    per layer [E, W, N, H] post-RoPE scaled queries.
  """
  out = Decoder(config).apply({"params": params}, tokens, positions, cache,
                              logits_at="none", capture=True)
  return tuple(c.q for c in out.captured)


def _views(config: DecoderConfig, cache: KVCache, seen: jax.Array,
           queries, query_positions) -> tuple[scorers_lib.LayerView, ...]:
  extra = lambda i: {} if queries is None else {
      "queries": queries[i], "query_positions": query_positions}
  return tuple(scorers_lib.LayerView.from_cache(
      layer, layer=i, window=config.layer_window(i), context_length=seen,
      logit_softcap=config.attn_logit_softcap, **extra(i))
               for i, layer in enumerate(cache.layers))


def _left_pad(token_lists: Sequence[Sequence[int]], multiple: int):
  """[R, W] tokens and [R, W] column offsets (-1 on pads, else 0..n-1)."""
  width = inference.bucket_length(max(map(len, token_lists)), multiple)
  tokens, offsets = inference.left_pad(token_lists, width)
  return tokens, offsets


def _budgets(config, eviction: Eviction, layer_budgets) -> tuple[int, ...]:
  protected = eviction.protected
  if layer_budgets is None:
    return cache_lib.window_capped_budgets(config, eviction.budget, protected)
  budgets = tuple(layer_budgets)
  if len(budgets) != config.num_layers:
    raise ValueError(f"{len(budgets)} layer budgets for a model of "
                     f"{config.num_layers} layers")
  out = []
  for i, b in enumerate(budgets):
    b = cache_lib.check_budget(b, protected, what=f"budget of layer {i}")
    window = config.layer_window(i)
    out.append(b if window is None else min(b, max(window, protected.size)))
  return tuple(out)


def _observer_for(scorer, width: int):
  """The scorer, its observation window widened to the whole medoid text
  (SnapKV reads the last `window_size` queries; here all W are the
  window)."""
  if hasattr(scorer, "window_size"):
    return dataclasses.replace(scorer, window_size=width)
  if hasattr(scorer, "observer"):
    return dataclasses.replace(scorer,
                               observer=_observer_for(scorer.observer, width))
  return scorer


def prefill_episodes(model: Pretrained, scorer, eviction: Eviction,
                     context: Sequence[int],
                     observations: Sequence[Sequence[int]], room: int, *,
                     layer_budgets: Sequence[int] | None = None,
                     rng: jax.Array | None = None, pad_multiple: int = 64,
                     observation_multiple: int = 16) -> Prefilled:
  """One compressed cache per episode, all in one batch.

  Args:
    model: the decoder.
    scorer: a scorer that reads at most the cache and `queries`
      (episode_scorer: KVzipMaxScorer or SnapKV; MedoidBlendScorer, or any
      query-free one, which ignores the medoid).
    eviction: the budget (per head) and `chunk_size` (the block); its
      protocol is ignored (this is always block-wise).
    context: the conversation's tokens (BOS first).
    observations: E token lists, episode e's observation window (its
      medoid text, with any instruction before it).
    room: slots to leave after the last block (question + answer).
    layer_budgets: optional per-layer budgets (per head) instead of the
      uniform eviction.budget; a sliding-window layer is capped at its
      window.
    rng: PRNG key for random scorers.
  Returns:
    Prefilled with an E-row cache (row e: episode e), first_logits [E, V],
    lengths [E] (all the context length), peak_slots: the most slots any
    layer held per head (<= max budget + block), peak_bytes: the most bytes
    the E caches held together.
  Raises:
    ValueError: a full-cache eviction, no observations, a scorer that needs
      more than queries, bad layer budgets.
  """
  if eviction.full:
    raise ValueError("episodic prefill needs a budget (eviction.budget=None "
                     "keeps the whole conversation in every episode)")
  if not observations or min(map(len, observations)) == 0:
    raise ValueError("every episode needs a non-empty observation window")
  extra = scorer.needs - _GIVES
  if extra:
    raise ValueError(f"scorer {scorer.name!r} needs {sorted(extra)}; the "
                     f"episodic prefill gives only the medoid's queries")
  config, params = model.config, model.params
  rng = jax.random.key(0) if rng is None else rng
  budgets = _budgets(config, eviction, layer_budgets)
  e, c = len(observations), eviction.chunk_size
  batch = inference.pad_batch([list(context)] * e, pad_multiple, chunk=c)
  tokens, positions = jnp.asarray(batch.tokens), jnp.asarray(batch.positions)
  lengths, t = batch.lengths, batch.tokens.shape[1]
  obs_tokens, obs_offsets = _left_pad(observations, observation_multiple)
  reads_queries = "queries" in scorer.needs
  scorer = _observer_for(scorer, obs_tokens.shape[1]).for_budget(
      eviction.budget)
  cache, peak, peak_bytes = None, 0, 0
  for i, start in enumerate(range(0, t, c)):
    chunk = slice(start, start + c)
    if cache is None:
      caps = cache_lib.eviction_capacities(config, budgets, c)
      logits, cache, _ = inference.prefill(
          config, params, tokens[:, chunk], positions[:, chunk], caps)
    else:
      logits, cache, _ = inference.extend(
          config, params, cache, tokens[:, chunk], positions[:, chunk])
    peak = max(peak, max(layer.capacity for layer in cache.layers))
    peak_bytes = max(peak_bytes, cache.num_bytes())
    seen_np = np.clip(lengths - (t - start - c), 0, None).astype(np.int32)
    seen = jnp.asarray(seen_np)
    queries = obs_pos = None
    if reads_queries:
      obs_pos = jnp.asarray(np.where(obs_offsets >= 0,
                                     seen_np[:, None] + obs_offsets, -1),
                            jnp.int32)
      queries = _observe(config, params, cache, jnp.asarray(obs_tokens),
                         obs_pos)
    views = _views(config, cache, seen, queries, obs_pos)
    scores = score_layers(scorer, views, jax.random.fold_in(rng, i))
    last = start + c >= t
    capacities = cache_lib.eviction_capacities(config, budgets,
                                               room if last else c)
    cache = _evict(cache, scores, seen, None, budgets, capacities,
                   eviction.protected)
  return Prefilled(logits, cache, lengths, peak,
                   max(peak_bytes, cache.num_bytes()))


def _rows(cache: KVCache, rows: jax.Array) -> KVCache:
  """The cache's batch rows `rows` (the shared ring `end` unchanged)."""
  return jax.tree_util.tree_map(lambda x: x[rows] if x.ndim else x, cache)


def answer_questions(model: Pretrained, episodic: Prefilled,
                     episodes: Sequence[int],
                     questions: Sequence[Sequence[int]],
                     max_new_tokens: int, *, eos_id: int = EOS_ID,
                     multiple: int = 16) -> list[list[int]]:
  """Greedy answers, question q decoded through episode episodes[q]'s cache.

  Args:
    episodic: prefill_episodes' result.
    episodes: [Q] the episode (cache row) of each question (route()).
    questions: Q token lists that follow the context (no BOS).
    max_new_tokens: tokens to generate per question.
  Returns:
    Q token lists, cut after EOS.
  Raises:
    ValueError: an episode out of range, or questions + answers that do not
      fit the room the caches were prefilled with.
  """
  num = episodic.first_logits.shape[0]
  rows = np.asarray(episodes, np.int32)
  if rows.shape != (len(questions),) or np.any(rows < 0) or np.any(
      rows >= num):
    raise ValueError(f"episodes {list(rows)} must name one of the {num} "
                     f"episodes for each of the {len(questions)} questions")
  q_tokens, q_offsets = _left_pad(questions, multiple)
  need = q_tokens.shape[1] + max_new_tokens
  for i, layer in enumerate(episodic.cache.layers):
    free = layer.capacity - int(layer.end)
    if model.config.layer_window(i) is None and free < need:
      raise ValueError(f"questions ({q_tokens.shape[1]} tokens padded) and "
                       f"{max_new_tokens} new tokens need {need} free slots; "
                       f"layer {i} has {free}: prefill with a larger room")
  cache = _rows(episodic.cache, jnp.asarray(rows))
  lengths = episodic.lengths[rows]
  positions = np.where(q_offsets >= 0, lengths[:, None] + q_offsets, -1)
  logits, cache, _ = inference.extend(
      model.config, model.params, cache, jnp.asarray(q_tokens),
      jnp.asarray(positions, jnp.int32))
  nxt = lengths + np.asarray([len(q) for q in questions], np.int32)
  out, _ = inference.decode(model.config, model.params, cache, logits,
                            jnp.asarray(nxt, jnp.int32),
                            max_new_tokens=max_new_tokens, eos_id=eos_id)
  return [inference.cut_after_eos(r, eos_id)
          for r in np.asarray(out).tolist()]


@dataclasses.dataclass(frozen=True, eq=False)
class MedoidBlendScorer(scorers_lib.Scorer):
  """A learned score and the medoid's attention, combined (beyond EpiCache).

  score_j = (1 - weight) * log(a_j + eps) + weight * log p_j, where a_j is
  the observer's attention on slot j over the medoid's queries (by default
  KVzipMaxScorer's max; SnapKV's pooled mean with observer=SnapKVScorer())
  and p_j the learned scorer's per-head softmax of its logits over the
  head's valid slots (KVP's predicted share of future attention; see
  cache.normalise_scores_within_head). The blend is a weighted geometric
  mean of the two: the medoid says what this episode asks about, KVP what
  any future query tends to read. weight = 0 ranks as the observer, 1 as
  the learned scorer. Slots the observer always keeps (+inf) stay +inf.
  [batch, kv_heads, slots].
  """
  name = "medoid_blend"
  needs = frozenset({"queries"})
  array_fields = ("learned",)
  learned: Any = None
  observer: Any = KVzipMaxScorer()
  weight: float = 0.5
  eps: float = 1e-6

  def __post_init__(self):
    if self.learned is None:
      raise ValueError("MedoidBlendScorer needs learned= (e.g. a KVPScorer)")
    if not 0.0 <= self.weight <= 1.0:
      raise ValueError(f"weight must be in [0, 1], got {self.weight!r}")
    if self.learned.needs - {"rng"}:
      raise ValueError(f"the learned scorer {self.learned.name!r} must be "
                       f"query-free, it needs {sorted(self.learned.needs)}")

  def _score(self, view, rng):
    attn = self.observer.score(view, rng)
    logits = self.learned.score(view, rng)
    share = cache_lib.normalise_scores_within_head(logits, view.valid)
    log_a = jnp.log(jnp.where(jnp.isfinite(attn), jnp.maximum(attn, 0.0),
                              0.0) + self.eps)
    log_p = jnp.log(jnp.where(jnp.isfinite(share), share, 0.0) + self.eps)
    blend = (1.0 - self.weight) * log_a + self.weight * log_p
    return jnp.where(attn == jnp.inf, jnp.inf, blend)
