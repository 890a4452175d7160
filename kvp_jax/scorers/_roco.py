"""RoCo: robust cache omission (Ren and Zhu 2024, "On the Efficacy of
Eviction Policy for Key-Value Constrained Generative Language Model
Inference", arXiv 2402.06262; EasyKV's `h2o_head_std_avg` policy)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from kvp_jax.cache import _slots
from kvp_jax.scorers._base import register, Scorer


def temporal_moments(view) -> tuple[jnp.ndarray, jnp.ndarray]:
  """RoCo's statistics of every slot: mean and standard deviation of the
  attention it received over the queries that could attend to it.

  Args:
    view: a LayerView with attention_counts, attention_sums and
      attention_sq_sums (see attention_column_moments).
  Returns:
    (mean, std), each [batch, kv_heads, slots] float32: sums / counts and
    sqrt(sq_sums / counts - mean^2) (the population std, as EasyKV). A slot
    no query could see (counts = 0: a key that left a sliding window before
    the captured queries) gets mean 0 and std 0, so RoCo evicts it first.
  """
  counts = view.attention_counts.astype(jnp.float32)
  seen = counts > 0
  c = jnp.where(seen, counts, 1.0)
  mean = jnp.where(seen, view.attention_sums.astype(jnp.float32) / c, 0.0)
  second = jnp.where(seen, view.attention_sq_sums.astype(jnp.float32) / c, 0.0)
  std = jnp.sqrt(jnp.maximum(second - mean * mean, 0.0))
  return mean, std


@register
@dataclasses.dataclass(frozen=True)
class RoCoScorer(Scorer):
  """Evict low temporal-mean attention among the most robust tokens.

  Statistics per (layer, KV head) and slot j (temporal_moments): over the
  captured prefill queries that could attend to j (causal, within the
  layer's sliding window), mean_j and std_j of the attention j received,
  the probability averaged over the GQA group (mean, not max: EasyKV
  averages the group's attention maps before its statistics, and H2O's
  attention_sums here are the same group mean, so RoCo's sum is H2O's).

  The rule at budget b (EasyKV's encoding-stage step, applied once to a
  head holding n > b valid tokens):

    1. protected P (+inf): the first `num_sinks` positions and the r newest
       tokens, r = max(floor(recent_ratio b), min_recent) (recent_ratio:
       0.1 in prefill, decode_recent_ratio = 0.3 when evicting during
       decoding, EasyKV's two values; for_decoding);
    2. the others O; e = n - b of them must go;
    3. the candidates F: the m lowest-std tokens of O (the most robust),
       m = min(max(b - |P|, e), |O|) (EasyKV: max(budget - recent_window -
       sinks, stride), the number evicted per step being its stride);
    4. evicted: the e lowest-mean tokens of F.

  Ties go to the older token (it becomes a candidate and is evicted first).
  Scores: +inf on P, mean_j on the kept tokens of O, mean_j - 2 on the
  evicted ones (means lie in [0, 1]), so the top b are exactly the tokens
  the rule keeps. The rule is not nested in b (a larger b widens F, which
  can let in a low-mean token the smaller budget kept), so no one ranking
  serves every budget: `budget` must be the eviction's budget. A sliding-
  window layer uses min(budget, max(window, num_sinks + min_recent)), as
  cache.window_capped_budgets gives it. It is exact with uniform allocation
  when the cache's protected tokens (Eviction.protected) are within P
  (defaults: 4 sinks, min_recent = 16 = cache.Protected().num_recent).

  Departures from EasyKV: EasyKV keeps only the 10 newest tokens out of F
  and uses r solely to size F; here the recent window r is kept, as the
  paper describes it. With a compress-once prefill e is usually larger
  than b - |P|, so F = the e lowest-std tokens and RoCo keeps the
  highest-std ones (EasyKV only ever evicts a stride at a time). In a
  chunked prefill (eval.chunk_size: EasyKV's stride, the tokens between
  evictions) each token's statistics add up the attention of every chunk's
  queries since it entered, over the cache each chunk saw
  (accumulate_chunks, as EasyKV). Earlier results were made with one
  recent ratio of 0.3 in prefill and decoding and the current chunk's
  statistics only (EARLIER): identity() names what differs from those, so
  they stay apart, and scorer_options {"roco": {"recent_ratio": 0.3,
  "accumulate_chunks": False}} rebuilds them. Under the
  "decode" protocol they run: the prompt's moments of the kept tokens, then
  every generated query's attention added (kvp_jax.eviction._moments), and
  each eviction drops the decode_interval tokens the rule picks.

  budget=None (any budget; an approximation): one ranking that keeps the
  about recent_ratio b newest tokens and, before them in the interleave,
  the tokens with the highest mean + std (a token low on both is what RoCo
  evicts first), interleaved as H2O does:
  score_j = -min(r_rec_j / f, (r_ms_j + 1/2) / (1 - f)), f = recent_ratio,
  sinks +inf.

  Shape [batch, kv_heads, slots]; comparable only within a (batch, head).
  """
  name = "roco"
  needs = frozenset({"attention_sums", "attention_counts",
                     "attention_sq_sums"})
  budget: int | None = None
  recent_ratio: float = 0.1
  decode_recent_ratio: float = 0.3
  accumulate_chunks: bool = True
  num_sinks: int = 4
  min_recent: int = 16
  # The settings RoCo's results were made with before EasyKV's two recent
  # ratios (identity() lists the fields that differ from them).
  EARLIER: ClassVar[dict] = {"recent_ratio": 0.3, "decode_recent_ratio": 0.3,
                             "accumulate_chunks": False}

  def __post_init__(self):
    for field in ("recent_ratio", "decode_recent_ratio"):
      if not 0.0 <= getattr(self, field) < 1.0:
        raise ValueError(f"{field}={getattr(self, field)} not in [0, 1)")
    for field in ("num_sinks", "min_recent"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{field} must be an int >= 0, got {value!r}")
    b = self.budget
    if b is not None and (isinstance(b, bool) or not isinstance(b, int)
                          or b < self.num_sinks + self.min_recent):
      raise ValueError(
          f"budget must be None or an int >= num_sinks + min_recent = "
          f"{self.num_sinks + self.min_recent}, got {b!r}")

  def identity(self) -> dict:
    return self._differing(self.EARLIER)

  def for_decoding(self) -> "RoCoScorer":
    """The scorer that evicts during decoding: decode_recent_ratio's
    recent window."""
    return dataclasses.replace(self, recent_ratio=self.decode_recent_ratio)

  def for_budget(self, budget: int | None) -> "RoCoScorer":
    """The rule depends on the budget: the scorer that evicts to it."""
    return dataclasses.replace(self, budget=budget)

  def layer_budget(self, window: int | None) -> int:
    """The budget of a layer with sliding window `window` (or None)."""
    if window is None:
      return self.budget
    return min(self.budget, max(window, self.num_sinks + self.min_recent))

  def _score(self, view, rng):
    valid, pos = view.valid, view.positions
    mean, std = temporal_moments(view)
    sinks = valid & (pos < self.num_sinks)
    r_rec = _slots.rank_descending(pos, pos, valid)        # 0 = the newest
    if self.budget is None:
      f = self.recent_ratio
      r_ms = _slots.rank_descending(mean + std, pos, valid & ~sinks)
      score = -jnp.minimum(r_rec / f if f > 0 else jnp.inf,
                           (r_ms + 0.5) / (1.0 - f))
      return jnp.where(sinks, jnp.inf, score)

    b = self.layer_budget(view.window)
    r = max(int(self.recent_ratio * b), self.min_recent)
    protected = sinks | (valid & (r_rec < r))
    other = valid & ~protected
    count = lambda x: jnp.sum(x, axis=-1, keepdims=True, dtype=jnp.int32)
    n, n_other = count(valid), count(other)                   # [B, K, 1]
    evict = jnp.maximum(n - b, 0)
    m = jnp.minimum(jnp.maximum(b - count(protected), evict), n_other)
    # Rank 0 = the most robust (lowest std) / the lowest mean; ties: older.
    r_std = _slots.rank_descending(-std, -pos, other)
    candidate = other & (r_std < m)
    r_mean = _slots.rank_descending(-mean, -pos, candidate)
    evicted = candidate & (r_mean < evict)
    return jnp.where(protected, jnp.inf,
                     jnp.where(evicted, mean - 2.0, mean))
