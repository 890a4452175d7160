"""Every scorer against an independent numpy implementation of its rule."""

import functools
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import model
from kvp_jax import policy as policy_lib
from kvp_jax import scorers
from kvp_jax.scorers import LayerView

B, K, N, S, H = 2, 2, 4, 40, 8
G = N // K
TQ = 10
LENGTHS = (38, 30)                  # Tokens seen by each row.
EVICTED = ((5, 2), (3, 14))         # Tokens missing per (row, head): row 1
                                    # head 1 keeps 16, too few for LagKV.
LAG, WINDOW_SIZE = 8, 6             # Small LagKV / SnapKV windows to fit S.
INF = np.inf


def make_view(seed=0, window=None) -> LayerView:
  """A view with every optional field; slots shuffled, some empty; row 1's
  queries left-padded by 2."""
  rng = np.random.default_rng(seed)
  pos = np.full((B, K, S), -1, np.int32)
  for b, t in enumerate(LENGTHS):
    for k in range(K):
      middle = np.arange(4, t - TQ)   # Keep sinks and the query tokens.
      drop = rng.choice(middle, size=EVICTED[b][k], replace=False)
      kept = np.setdiff1d(np.arange(t), drop)
      pos[b, k, :len(kept)] = kept
      pos[b, k] = rng.permutation(pos[b, k])
  qpos = np.stack([np.arange(t - TQ, t) for t in LENGTHS]).astype(np.int32)
  qpos[1, :2] = -1
  f32 = lambda *shape: rng.normal(size=shape).astype(np.float32)
  return LayerView(
      keys=jnp.asarray(f32(B, K, S, H)), values=jnp.asarray(f32(B, K, S, H)),
      positions=jnp.asarray(pos),
      context_length=jnp.asarray(LENGTHS, jnp.int32),
      layer=3, window=window,
      queries=jnp.asarray(f32(B, TQ, N, H)),
      query_positions=jnp.asarray(qpos),
      attention_sums=jnp.asarray(rng.uniform(size=(B, K, S)), jnp.float32),
      importance=jnp.asarray(rng.uniform(size=(B, K, S)), jnp.float32),
      # RoCo's moments, from their own stream (the fields above unchanged).
      **_moments(np.random.default_rng(seed + 1000)))


def _moments(rng):
  """attention_counts and attention_sq_sums of a few queries per slot."""
  counts = rng.integers(1, TQ + 1, size=(B, K, S))
  sq = rng.uniform(size=(B, K, S)) * counts
  return {"attention_counts": jnp.asarray(counts, jnp.float32),
          "attention_sq_sums": jnp.asarray(sq, jnp.float32)}


def _np(view):
  return {f: None if getattr(view, f) is None else np.asarray(getattr(view, f))
          for f in ("keys", "values", "positions", "context_length", "queries",
                    "query_positions", "attention_sums", "importance")}


def _rows(v):
  """(b, k, slots of valid tokens in position order)."""
  for b in range(B):
    for k in range(K):
      pos = v["positions"][b, k]
      idx = np.flatnonzero(pos >= 0)
      yield b, k, idx[np.argsort(pos[idx])]


def _empty_scores():
  return np.full((B, K, S), -INF)


# --- numpy references, one per rule ----------------------------------------

def ref_knorm(view):
  v = _np(view)
  out = -np.linalg.norm(v["keys"].astype(np.float64), axis=-1)
  return np.where(v["positions"] >= 0, out, -INF)


def ref_keydiff(view):
  v, out = _np(view), _empty_scores()
  for b, k, idx in _rows(v):
    keys = v["keys"][b, k, idx].astype(np.float64)
    anchor = (keys / np.linalg.norm(keys, axis=1, keepdims=True)).mean(0)
    out[b, k, idx] = -(keys @ anchor) / (np.linalg.norm(keys, axis=1)
                                         * np.linalg.norm(anchor))
  return out


def ref_streaming_llm(view):
  v, out = _np(view), _empty_scores()
  for b, k, idx in _rows(v):
    pos = v["positions"][b, k, idx]
    out[b, k, idx] = np.where(pos < 4, INF, pos - v["context_length"][b])
  return out


def ref_oracle(view):
  v = _np(view)
  return np.where(v["positions"] >= 0, v["importance"], -INF)


def ref_lagkv(view, lag=LAG, sinks=4):
  v, out = _np(view), _empty_scores()
  for b, k, idx in _rows(v):
    n = len(idx)
    score = np.full(n, INF)
    if n < sinks + 2 * lag:
      score[sinks:] = (np.arange(sinks, n) - sinks) / (n - sinks)
    else:
      parts = (n - sinks) // lag
      for p in range(parts - 1):
        here = idx[sinks + p * lag: sinks + (p + 1) * lag]
        ref = idx[sinks + (p + 1) * lag: sinks + (p + 2) * lag]
        total = 0
        for x in (v["keys"][b, k], v["values"][b, k]):
          lo, hi = x[ref].min(0), x[ref].max(0)
          sd = ((x[here] - lo) / (hi - lo)).std(axis=1, ddof=1)
          e = np.exp(sd - sd.max())
          total = total + e / e.sum() / 2
        rank = np.argsort(np.argsort(total))
        score[sinks + p * lag: sinks + (p + 1) * lag] = (rank + p / parts) / lag
    out[b, k, idx] = score
  return out


def ref_h2o(view, f=0.5):
  v, out = _np(view), _empty_scores()
  for b, k, idx in _rows(v):
    pos, sums = v["positions"][b, k, idx], v["attention_sums"][b, k, idx]
    r_rec = np.empty(len(idx))
    r_rec[np.argsort(-pos)] = np.arange(len(idx))
    r_hh = np.empty(len(idx))
    r_hh[np.lexsort((-pos, -sums))] = np.arange(len(idx))
    if f == 0:
      score = -r_hh
    elif f == 1:
      score = -r_rec
    else:
      score = -np.minimum(r_rec / f, (r_hh + 0.5) / (1 - f))
    out[b, k, idx] = score
  return out


def _np_attention(v, b, k, q_rows, window):
  """[G, len(q_rows), S] probabilities of row b's queries q_rows (skipping
  padding: zero rows), by direct softmax over the visible slots."""
  out = np.zeros((G, len(q_rows), S))
  kp = v["positions"][b, k]
  for g in range(G):
    for i, t in enumerate(q_rows):
      p = v["query_positions"][b, t]
      if p < 0:
        continue
      see = (kp >= 0) & (kp <= p)
      if window is not None:
        see &= p - kp < window
      q = v["queries"][b, t, k * G + g].astype(np.float64)
      logits = v["keys"][b, k].astype(np.float64) @ q
      e = np.exp(logits[see] - logits[see].max())
      out[g, i, see] = e / e.sum()
  return out


def ref_tova(view):
  v, out = _np(view), _empty_scores()
  for b, k, idx in _rows(v):
    probs = _np_attention(v, b, k, [TQ - 1], view.window)
    score = probs[:, 0].mean(0)
    score[v["positions"][b, k] == v["query_positions"][b, -1]] = INF
    out[b, k, idx] = score[idx]
  return out


def ref_snapkv(view, w=WINDOW_SIZE, kernel=5):
  v, out = _np(view), _empty_scores()
  for b, k, idx in _rows(v):
    rows = [t for t in range(TQ - w, TQ) if v["query_positions"][b, t] >= 0]
    attn = _np_attention(v, b, k, rows, view.window).mean(axis=(0, 1))
    start = min(v["query_positions"][b, t] for t in rows)
    pos = v["positions"][b, k, idx]
    before = idx[pos < start]
    padded = np.concatenate([np.zeros(kernel // 2), attn[before],
                             np.zeros(kernel // 2)])
    out[b, k, idx] = INF
    out[b, k, before] = [padded[i:i + kernel].sum() / kernel
                         for i in range(len(before))]
  return out


CASES = {   # name -> (kwargs, reference)
    "knorm": ({}, ref_knorm),
    "keydiff": ({}, ref_keydiff),
    "streaming_llm": ({}, ref_streaming_llm),
    "oracle": ({}, ref_oracle),
    "lagkv": ({"lag": LAG}, ref_lagkv),
    "h2o": ({}, ref_h2o),
    "tova": ({}, ref_tova),
    "snapkv": ({"window_size": WINDOW_SIZE}, ref_snapkv),
}


def _assert_scores(got, want):
  got = np.asarray(got)
  assert got.shape == (B, K, S) and got.dtype == np.float32
  for sign in (1, -1):
    np.testing.assert_array_equal(got == sign * INF, want == sign * INF)
  finite = np.isfinite(want)
  np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-6)
  for b in range(B):      # The same ranking of the finite (scored) slots.
    for k in range(K):
      f = np.flatnonzero(finite[b, k])
      np.testing.assert_array_equal(np.argsort(-got[b, k, f], kind="stable"),
                                    np.argsort(-want[b, k, f], kind="stable"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_numpy_reference(name):
  kwargs, reference = CASES[name]
  view = make_view(0)
  scorer = scorers.get_scorer(name, **kwargs)
  _assert_scores(jax.jit(scorer.score)(view), reference(view))


@pytest.mark.parametrize("name", ["tova", "snapkv"])
def test_attention_rules_with_sliding_window(name):
  kwargs, reference = CASES[name]
  view = make_view(1, window=9)
  _assert_scores(scorers.get_scorer(name, **kwargs).score(view),
                 reference(view))


@pytest.mark.parametrize("fraction", [0.0, 0.25, 1.0])
def test_h2o_recent_fraction(fraction):
  view = make_view(2)
  got = scorers.get_scorer("h2o", recent_fraction=fraction).score(view)
  _assert_scores(got, ref_h2o(view, fraction))


def test_h2o_budget_splits_between_recent_and_heavy():
  view = make_view(3)
  got = np.asarray(scorers.get_scorer("h2o").score(view))[0, 0]
  pos = np.asarray(view.positions)[0, 0]
  sums = np.asarray(view.attention_sums)[0, 0]
  kept = np.argsort(-got)[:10]
  newest = np.argsort(-np.where(pos >= 0, pos, -1))[:5]
  heaviest = np.argsort(-np.where(pos >= 0, sums, -1))[:4]
  assert set(newest) | set(heaviest) <= set(kept)


@pytest.mark.parametrize("name", sorted(CASES))
def test_permuting_slots_permutes_scores(name):
  view = make_view(4)
  rng = np.random.default_rng(5)
  perm = jnp.asarray(np.stack([np.stack([rng.permutation(S) for _ in range(K)])
                               for _ in range(B)]))
  take = lambda x: jnp.take_along_axis(
      x, perm if x.ndim == 3 else perm[..., None], axis=2)
  shuffled = view.replace(
      keys=take(view.keys), values=take(view.values),
      positions=take(view.positions),
      attention_sums=take(view.attention_sums),
      importance=take(view.importance))
  scorer = scorers.get_scorer(name, **CASES[name][0])
  np.testing.assert_allclose(scorer.score(shuffled), take(scorer.score(view)),
                             rtol=1e-5, atol=1e-6)


@functools.cache
def _kvp_artifact() -> str:
  """A random KVP policy for layers 0..3 (make_view's layer is 3)."""
  config = policy_lib.AgentConfig(hidden=16, feature_width=16, position_dim=4,
                                  max_position=64, dtype="float32")
  path = tempfile.mkdtemp() + "/random.kvp"
  policy_lib.save_artifact(path, policy_lib.PolicyArtifact(
      agent_config=config,
      params=policy_lib.init_agents(config, 4 * K, H, jax.random.key(0)),
      model_name="tiny", model_fingerprint="x", num_layers=4,
      num_kv_heads=K, head_dim=H, layer_start=0, layer_stop=4, info={}))
  return path


def scorer_kwargs(name):
  return {"artifact": _kvp_artifact()} if name == "kvp" else (
      CASES.get(name, ({},))[0])


def test_every_registered_scorer_runs_on_a_full_view():
  assert set(CASES) | {"random", "kvp"} <= set(scorers.available_scorers())
  view = make_view(6, window=12)
  valid = np.asarray(view.valid)
  for name in scorers.available_scorers():
    scorer = scorers.get_scorer(name, **scorer_kwargs(name))
    assert scorer.name == name and scorer.needs <= scorers.NEEDS
    got = np.asarray(jax.jit(scorer.score)(view, jax.random.key(0)))
    assert got.shape == (B, K, S) and got.dtype == np.float32, name
    assert not np.isnan(got).any(), name
    assert (got[valid] > -INF).all(), name
    assert (got[~valid] == -INF).all(), name
    assert np.isfinite(got[valid]).any(), name


def test_random_uses_the_key():
  view = make_view(7)
  scorer = scorers.get_scorer("random")
  a = scorer.score(view, jax.random.key(0))
  np.testing.assert_array_equal(a, scorer.score(view, jax.random.key(0)))
  assert not np.array_equal(a, scorer.score(view, jax.random.key(1)))


def test_empty_slots_rank_last():
  view = make_view(8)
  valid = np.asarray(view.valid)
  for name in scorers.available_scorers():
    got = np.asarray(scorers.get_scorer(name, **scorer_kwargs(name))
                     .score(view, jax.random.key(0)))
    for b in range(B):
      for k in range(K):
        order = np.argsort(-got[b, k], kind="stable")
        n = valid[b, k].sum()
        assert valid[b, k, order[:n]].all(), name


@pytest.mark.parametrize("name,field", [
    ("tova", "queries"), ("snapkv", "queries"), ("h2o", "attention_sums"),
    ("oracle", "importance"), ("random", "rng")])
def test_missing_needs_raise(name, field):
  view = make_view(9)
  if field != "rng":
    view = view.replace(**{field: None})
  with pytest.raises(scorers.MissingInputError, match=f"{name}.*{field}"):
    scorers.get_scorer(name).score(view)


def test_unknown_scorer_lists_the_known_ones():
  with pytest.raises(ValueError, match="unknown scorer 'nope'.*knorm.*tova"):
    scorers.get_scorer("nope")


def test_register_rejects_a_second_scorer_with_a_taken_name():
  class Clash(scorers.Scorer):
    name = "knorm"
  with pytest.raises(ValueError, match="already registered"):
    scorers.register(Clash)


def test_view_from_layer_cache():
  cache = model.LayerCache(
      k=jnp.ones((B, K, S, H)), v=jnp.ones((B, K, S, H)),
      pos=jnp.asarray(np.asarray(make_view(0).positions)),
      end=jnp.zeros((), jnp.int32))
  view = LayerView.from_cache(cache, layer=2, window=512)
  np.testing.assert_array_equal(view.context_length, LENGTHS)
  assert view.layer == 2 and view.window == 512 and view.queries is None
  leaves = jax.tree_util.tree_leaves(view)
  assert len(leaves) == 4   # Static fields and absent ones are no leaves.
