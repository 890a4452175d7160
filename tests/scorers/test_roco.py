"""RoCo: its attention moments against a brute-force attention matrix, its
rule against a step-by-step numpy version of EasyKV's, and both protocols
end to end on a tiny model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import cache as cache_lib
from kvp_jax import eviction as eviction_lib
from kvp_jax import model as model_lib
from kvp_jax import scorers
from kvp_jax.scorers import LayerView
from tests.scorers.test_attention_stats import _dense_probs
from tests.scorers.test_attention_stats import _inputs

B, K, N, S, H = 2, 2, 4, 40, 8
G = N // K
INF = np.inf


# --- statistics --------------------------------------------------------------

def _dense_moments(q, qpos, keys, key_pos, window, softcap):
  """(counts, sums, sq_sums) [B, K, S] by loops over the dense attention."""
  probs = _dense_probs(q, qpos, keys, key_pos, window, softcap).mean(axis=2)
  counts = np.zeros((B, K, S))
  for b in range(B):
    for k in range(K):
      for j in range(S):
        p = key_pos[b, k, j]
        if p < 0:
          continue
        see = (qpos[b] >= p)
        if window is not None:
          see &= qpos[b] - p < window
        counts[b, k, j] = see.sum()
  return counts, probs.sum(axis=2), (probs ** 2).sum(axis=2)


@pytest.mark.parametrize("window,softcap,block", [
    (None, None, 16), (7, None, 5), (None, 2.0, 512)])
def test_moments_match_dense(window, softcap, block):
  q, qpos, keys, key_pos = _inputs(0)
  got = jax.jit(scorers.attention_column_moments,
                static_argnames=("window", "block", "softcap"))(
                    q, qpos, keys, key_pos, window=window, block=block,
                    softcap=softcap)
  want = _dense_moments(q, qpos, keys, key_pos, window, softcap)
  for g, w in zip(got, want):
    assert g.shape == (B, K, S) and g.dtype == np.float32
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      got[1], scorers.attention_column_sums(q, qpos, keys, key_pos, window,
                                            block=block, softcap=softcap),
      rtol=1e-5, atol=1e-6)
  # Row 1 is left-padded by 5: its 33 queries see position 0, 33 - 1 see 1...
  if window is None:
    valid = key_pos[1] >= 0
    np.testing.assert_array_equal(np.asarray(got[0])[1][valid],
                                  33 - key_pos[1][valid])


# --- the rule ----------------------------------------------------------------

def _view(seed, window=None, lengths=(38, 31), drop=((3, 6), (0, 5)),
          num_queries=None):
  """A view whose statistics come from a brute-force attention matrix of
  queries at every position (or the last num_queries, as a chunk's); slots
  shuffled, some tokens already evicted."""
  q, qpos, keys, _ = _inputs(seed)
  rng = np.random.default_rng(seed + 100)
  t = q.shape[1]
  qpos = np.full((B, t), -1, np.int32)
  key_pos = np.full((B, K, S), -1, np.int32)
  for b, n in enumerate(lengths):
    qpos[b, t - n:] = np.arange(n)
    if num_queries is not None:
      qpos[b, :t - num_queries] = -1
    for k in range(K):
      gone = rng.choice(np.arange(4, n - 16), size=drop[b][k], replace=False)
      kept = np.setdiff1d(np.arange(n), gone)
      key_pos[b, k, :len(kept)] = kept
      key_pos[b, k] = rng.permutation(key_pos[b, k])
  counts, sums, sq = _dense_moments(q, qpos, keys, key_pos, window, None)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  return LayerView(
      keys=jnp.asarray(keys), values=jnp.asarray(keys),
      positions=jnp.asarray(key_pos),
      context_length=jnp.asarray(lengths, jnp.int32), window=window,
      attention_sums=f32(sums), attention_counts=f32(counts),
      attention_sq_sums=f32(sq))


def ref_kept(view, budget, ratio=0.1, sinks=4, min_recent=16):
  """The slots EasyKV's step keeps, per (row, head), as sets of slots:
  recent window and sinks, then std of the rest (protected at 1e9), the
  m most robust as candidates, the e lowest means of them evicted."""
  pos = np.asarray(view.positions)
  c = np.asarray(view.attention_counts, np.float64)
  s1 = np.asarray(view.attention_sums, np.float64)
  s2 = np.asarray(view.attention_sq_sums, np.float64)
  if view.window is not None:
    budget = min(budget, max(view.window, sinks + min_recent))
  out = {}
  for b in range(B):
    for k in range(K):
      slots = [j for j in np.argsort(pos[b, k]) if pos[b, k, j] >= 0]
      n = len(slots)
      if n <= budget:
        out[b, k] = set(slots)
        continue
      r = max(int(ratio * budget), min_recent)
      protected = [j for j in slots if pos[b, k, j] < sinks] + slots[-r:]
      protected = set(protected)
      std, mean = {}, {}
      for j in slots:
        cnt = c[b, k, j]
        mean[j] = s1[b, k, j] / cnt if cnt else 0.0
        var = s2[b, k, j] / cnt - mean[j] ** 2 if cnt else 0.0
        std[j] = 1e9 if j in protected else np.sqrt(max(var, 0.0))
      e = n - budget
      m = max(budget - len(protected), e)
      # Stable sorts over slots in position order: ties to the older token.
      robust = sorted(slots, key=lambda j: std[j])[:m]
      evicted = sorted(robust, key=lambda j: mean[j])[:e]
      out[b, k] = set(slots) - set(evicted)
  return out


def _kept_by_cache(view, scores, budget):
  """Slots select_top keeps from the scores (the cache's own protection)."""
  keep = np.asarray(cache_lib.select_top(scores, view.positions, budget,
                                         cache_lib.Protected(),
                                         view.context_length))
  return {(b, k): set(keep[b, k][keep[b, k] >= 0].tolist())
          for b in range(B) for k in range(K)}


@pytest.mark.parametrize("budget", [20, 24, 30, 33, 36])
def test_budgeted_rule_keeps_what_easykv_keeps(budget):
  # Budget 20: no candidates beyond the evicted (e > b - |P|); 33: row 0
  # head 0 evicts 2 of 13 candidates; 36: row 1 keeps everything.
  view = _view(0)
  scorer = scorers.get_scorer("roco", budget=budget)
  scores = jax.jit(scorer.score)(view)
  assert scores.shape == (B, K, S) and scores.dtype == np.float32
  want = ref_kept(view, budget)
  assert _kept_by_cache(view, scores, budget) == want
  got = np.asarray(scores)
  for (b, k), kept in want.items():      # The top b of the scores alone.
    order = np.argsort(-got[b, k], kind="stable")
    assert set(order[:len(kept)].tolist()) == kept
    assert len(kept) == min(budget, np.asarray(view.valid)[b, k].sum())


def test_rule_on_a_hand_made_head():
  """30 tokens, budget 28: 4 sinks and 16 recent kept, 10 free tokens of
  which the 8 most robust are candidates and the 2 lowest means of those go.
  A spiky token (lowest mean, highest std) survives; the two most robust
  tokens have high means and survive too."""
  n, budget = 30, 28
  pos = np.full((1, 1, 32), -1, np.int32)
  pos[0, 0, :n] = np.arange(n)[::-1]                 # Slots in reverse order.
  counts = np.zeros((1, 1, 32))
  counts[0, 0, :n] = n - pos[0, 0, :n]
  #        position:  4     5     6     7     8     9     10    11    12    13
  mean = dict(zip(range(4, 14),
                  [.010, .050, .030, .020, .060, .070, .080, .090, .040, .025]))
  std = dict(zip(range(4, 14),
                 [.300, .001, .010, .020, .030, .040, .050, .060, .200, .002]))
  m = np.full((1, 1, 32), 0.5)
  sd = np.full((1, 1, 32), 0.5)
  for p in range(4, 14):
    m[0, 0, n - 1 - p], sd[0, 0, n - 1 - p] = mean[p], std[p]
  view = LayerView(
      keys=jnp.zeros((1, 1, 32, 4)), values=jnp.zeros((1, 1, 32, 4)),
      positions=jnp.asarray(pos), context_length=jnp.asarray([n], jnp.int32),
      attention_counts=jnp.asarray(counts, jnp.float32),
      attention_sums=jnp.asarray(m * counts, jnp.float32),
      attention_sq_sums=jnp.asarray((sd ** 2 + m ** 2) * counts, jnp.float32))
  scores = scorers.get_scorer("roco", budget=budget).score(view)
  keep = np.asarray(cache_lib.select_top(scores, view.positions, budget,
                                         cache_lib.Protected()))
  gone = set(range(n)) - set(pos[0, 0, keep[0, 0]].tolist())
  # Candidates: all but positions 4 and 12 (highest std); lowest means: 13, 7.
  assert gone == {13, 7}
  mean_, std_ = scorers._roco.temporal_moments(view)
  np.testing.assert_allclose(np.asarray(std_)[0, 0, n - 1 - 4], 0.3, rtol=1e-3)
  np.testing.assert_allclose(np.asarray(mean_)[0, 0, n - 1 - 13], .025,
                             rtol=1e-5)


def test_sliding_window_layer_budget():
  view = _view(2, window=22, num_queries=12)
  scorer = scorers.get_scorer("roco", budget=30)
  assert scorer.layer_budget(22) == 22 and scorer.layer_budget(None) == 30
  assert scorer.layer_budget(8) == 20
  scores = scorer.score(view)
  assert _kept_by_cache(view, scores, 22) == ref_kept(view, 30)
  # Keys that left the window before every query: mean 0, std 0.
  mean, std = scorers._roco.temporal_moments(view)
  unseen = (np.asarray(view.attention_counts) == 0) & np.asarray(view.valid)
  assert unseen.any()
  assert (np.asarray(mean)[unseen] == 0).all()
  assert (np.asarray(std)[unseen] == 0).all()


def ref_any_budget(view, f=0.1, sinks=4):
  pos = np.asarray(view.positions)
  c = np.maximum(np.asarray(view.attention_counts, np.float64), 1)
  mean = np.asarray(view.attention_sums, np.float64) / c
  std = np.sqrt(np.maximum(
      np.asarray(view.attention_sq_sums, np.float64) / c - mean ** 2, 0))
  out = np.full((B, K, S), -INF)
  for b in range(B):
    for k in range(K):
      idx = np.flatnonzero(pos[b, k] >= 0)
      p = pos[b, k, idx]
      r_rec = np.empty(len(idx))
      r_rec[np.argsort(-p)] = np.arange(len(idx))
      free = p >= sinks
      ms = (mean + std)[b, k, idx]
      r_ms = np.full(len(idx), np.inf)
      order = np.lexsort((-p[free], -ms[free]))
      r_ms[np.flatnonzero(free)[order]] = np.arange(free.sum())
      score = -np.minimum(r_rec / f, (r_ms + 0.5) / (1 - f))
      out[b, k, idx] = np.where(free, score, INF)
  return out


def test_any_budget_ranking():
  view = _view(3)
  got = np.asarray(scorers.get_scorer("roco").score(view))
  want = ref_any_budget(view)
  np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
  finite = np.isfinite(want)
  np.testing.assert_allclose(got[finite], want[finite], rtol=1e-6)


@pytest.mark.parametrize("budget", [None, 28])
def test_permuting_slots_permutes_scores(budget):
  view = _view(4)
  rng = np.random.default_rng(5)
  perm = jnp.asarray(np.stack([np.stack([rng.permutation(S) for _ in range(K)])
                               for _ in range(B)]))
  take = lambda x: jnp.take_along_axis(
      x, perm if x.ndim == 3 else perm[..., None], axis=2)
  shuffled = view.replace(
      keys=take(view.keys), values=take(view.values),
      positions=take(view.positions), attention_sums=take(view.attention_sums),
      attention_counts=take(view.attention_counts),
      attention_sq_sums=take(view.attention_sq_sums))
  scorer = scorers.get_scorer("roco", budget=budget)
  np.testing.assert_allclose(scorer.score(shuffled), take(scorer.score(view)),
                             rtol=1e-6)


def test_bad_settings_and_missing_inputs():
  with pytest.raises(ValueError, match="budget must be None or an int >= "
                                       "num_sinks \\+ min_recent = 20"):
    scorers.get_scorer("roco", budget=12)
  with pytest.raises(ValueError, match="recent_ratio"):
    scorers.get_scorer("roco", recent_ratio=1.0)
  with pytest.raises(ValueError, match="min_recent"):
    scorers.get_scorer("roco", min_recent=-1)
  view = _view(5).replace(attention_sq_sums=None)
  with pytest.raises(scorers.MissingInputError, match="roco.*attention_sq"):
    scorers.get_scorer("roco").score(view)


# --- end to end ----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
  config = model_lib.tiny(sliding_window=16, vocab_size=64)
  params = model_lib.init_params(config, jax.random.key(0))
  return model_lib.Pretrained(config, params, None, "x", "random")


def _prompts(n=2, low=60, high=80, seed=0):
  rng = np.random.default_rng(seed)
  return [list(rng.integers(3, 64, int(rng.integers(low, high))))
          for _ in range(n)]


def test_once_protocol_keeps_the_rule_on_real_statistics(tiny):
  prompts = _prompts()
  config = tiny.config
  context = eviction_lib.prefill_context(tiny, prompts, capture=True)
  views = context.views(config, None)
  budget = 24
  pre = eviction_lib.compress_context(
      tiny, context, scorers.get_scorer("roco", budget=budget),
      eviction_lib.Eviction(budget), room=4)
  for i, view in enumerate(views):
    # Counts: every query of the prompt at or after the key (in the window).
    pos = np.asarray(view.positions)
    ctx = np.asarray(context.lengths)[:, None, None]
    see = ctx - pos if view.window is None else np.minimum(ctx - pos,
                                                           view.window)
    np.testing.assert_array_equal(np.asarray(view.attention_counts)[pos >= 0],
                                  see[pos >= 0])
    want = ref_kept(view, budget)
    held = np.asarray(pre.cache.layers[i].pos)
    for (b, k), kept in want.items():
      assert set(held[b, k][held[b, k] >= 0].tolist()) == set(
          pos[b, k][sorted(kept)].tolist()), (i, b, k)


@pytest.mark.parametrize("protocol", ["once", "chunked"])
def test_protocols_generate(tiny, protocol):
  prompts = _prompts()
  eviction = eviction_lib.Eviction(24, protocol=protocol, chunk_size=16)
  for scorer in (scorers.get_scorer("roco", budget=24),
                 scorers.get_scorer("roco")):
    out, stats = eviction_lib.generate_compressed(tiny, scorer, eviction,
                                                prompts, 4, eos_id=-1)
    assert [len(o) for o in out] == [4, 4]
    if protocol == "chunked":
      assert stats["peak_slots"] <= 24 + 16
  pre = eviction_lib.prefill_compressed(
      tiny, scorers.get_scorer("roco", budget=24), eviction, prompts, 0)
  kept = np.asarray(pre.cache.layers[2].pos >= 0).sum(-1)     # Global layer.
  np.testing.assert_array_equal(kept, 24)


def test_decode_protocol_generates(tiny):
  """Under "decode" RoCo evicts while generating, its moments running
  (tests/eviction/test_running_moments.py checks them against a one-shot
  recomputation): the cache stays within budget + interval."""
  out, stats = eviction_lib.generate_compressed(
      tiny, scorers.get_scorer("roco", budget=24),
      eviction_lib.Eviction(24, protocol="decode", decode_interval=4),
      _prompts(), 9, eos_id=-1)
  assert [len(o) for o in out] == [9, 9]
  assert stats["final_cache_bytes"] <= stats["cache_bytes"]
