"""EpiCache as the paper and apple/ml-epicache have it: memory-matched layer
budgets, the min-max allocation rule, the KVzip-style in-episode scorer
(each scorer against a brute-force numpy reference), and the earlier
options kept."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import cache as cache_lib
from kvp_jax import eviction as ev
from kvp_jax import model as model_lib
from kvp_jax import scorers

GEMMA = model_lib.gemma3_270m()
PROTECTED = cache_lib.Protected()                       # 4 sinks, 16 recent.


def _profiles(n, seed=0):
  """Sensitivity profiles of n layers: random, rising, flat, one spike, the
  global layers least sensitive, a negative one (layer 0's float noise)."""
  rng = np.random.default_rng(seed)
  spike = np.zeros(n)
  spike[n // 2] = 1.0
  low_global = np.ones(n)
  low_global[5::6] = 0.0
  noisy = rng.random(n) * 0.02
  noisy[0] = -2e-9
  return [rng.random(n), rng.random(n) ** 4, np.linspace(0, 1, n),
          np.full(n, 0.3), spike, low_global, noisy]


# Allocation rule.


def test_the_paper_rule_is_ml_epicaches_minmax_of_similarity():
  """ml-epicache's allocate_layer_budget: weights (1 - minmax(sim))**power
  over the key similarities; here sim = 1 - sensitivity."""
  s = np.array([0.0, 0.03, 0.01, 0.06, 0.02])
  sim = 1.0 - s
  want = (1.0 - (sim - sim.min()) / (sim.max() - sim.min())) ** 1.3
  np.testing.assert_allclose(ev.rule_weights(s), want, rtol=1e-12)
  np.testing.assert_allclose(ev.rule_weights(s, "paper", 2.0),
                             ev.rule_weights(s, "paper", 1.0) ** 2)
  np.testing.assert_array_equal(ev.rule_weights([0.2] * 4), np.ones(4))
  np.testing.assert_allclose(ev.rule_weights(s, "power"), s)
  assert ev.DEFAULT_ALPHA == {"paper": 1.3, "power": 1.0}
  with pytest.raises(ValueError, match="unknown layer budget rule"):
    ev.rule_weights(s, "linear")


def test_without_a_binding_floor_the_paper_rule_is_proportional():
  """No floor, no cap: budget_l = w_l x total / sum(w), as ml-epicache's
  (rounded to integers that sum to the total)."""
  s = [0.0, 0.3, 0.1, 0.6, 0.2]
  w = ev.rule_weights(s)
  got = np.asarray(ev.layer_budgets(s, 320, floor=0))
  assert got.sum() == 320
  assert np.all(np.abs(got - w * 320 / w.sum()) < 1.0)
  # The default rule is the paper's.
  assert ev.layer_budgets(s, 320, floor=0) == ev.layer_budgets(
      s, 320, rule="paper", alpha=1.3, floor=0)


def test_the_paper_rule_clamps_and_gives_back_what_the_floor_takes():
  """A layer below the floor is raised to it and the others give the slots
  back, in proportion (ml-epicache clamps and overshoots the total)."""
  s = [0.0, 0.3, 0.1, 0.6, 0.2]
  got = ev.layer_budgets(s, 320, floor=20)
  assert got == (20, 69, 20, 170, 41) and sum(got) == 320
  w = ev.rule_weights(s)
  free = [1, 3, 4]                 # Above the floor: one proportion lam.
  lam = np.asarray(got)[free] / w[free]
  assert np.ptp(lam) / lam.mean() < 0.02
  # A cap: the capped layer's excess goes to the others.
  capped = ev.layer_budgets(s, 320, floor=20, caps=[None, None, None, 100,
                                                    None])
  assert capped[3] == 100 and sum(capped) == 320
  assert all(c >= g for i, (c, g) in enumerate(zip(capped, got)) if i != 3)


def test_the_power_rule_is_the_earlier_allocation():
  """rule="power" gives what layer_budgets gave before the paper's rule
  (values computed with the earlier code)."""
  s = [0.0, 0.3, 0.1, 0.6, 0.2]
  assert ev.layer_budgets(s, 320, rule="power", floor=20) == (
      20, 75, 38, 130, 57)
  assert ev.layer_budgets(s, 320, rule="power", alpha=1.0, floor=20,
                          caps=[None, 40, None, 100, None]) == (
                              20, 40, 60, 100, 100)


@pytest.mark.parametrize("rule", ev.RULES)
def test_budgets_stay_within_floor_and_cap_and_sum_to_the_total(rule):
  for s in _profiles(7, seed=1):
    for total, floor in ((7 * 40, 10), (7 * 40, 40), (300, 0)):
      caps = [30, None, 50, None, None, 12, None]
      floors = [min(floor, c) if c else floor for c in caps]
      got = ev.layer_budgets(s, total, rule=rule, floor=floors, caps=caps)
      assert sum(got) == total
      for b, f, c in zip(got, floors, caps):
        assert f <= b <= (c or total)


# Memory matching.


def _kept_bytes(config, budgets) -> int:
  """Bytes of one row of a cache that keeps `budgets` slots per head and
  layer (an eviction's result with no room left), traced, not allocated."""
  caps = cache_lib.eviction_capacities(config, tuple(budgets), 0)
  assert caps == tuple(budgets)
  return jax.eval_shape(lambda: model_lib.init_cache(config, 1, caps)
                        ).num_bytes()


def test_gemma_uniform_totals():
  """15 sliding-window layers of 512 and 3 global ones: the uniform cell of
  budget b keeps sum over layers of min(b, cap_l) slots per head."""
  caps = ev.layer_caps(GEMMA, PROTECTED)
  assert caps.count(None) == 3 and set(caps) == {None, 512}
  for b, want in ((256, 4608), (512, 9216), (1024, 10752), (2048, 13824)):
    assert ev.uniform_total(GEMMA, b, PROTECTED) == want == sum(
        min(b, c or b) for c in caps)


@pytest.mark.parametrize("rule", ev.RULES)
def test_every_allocation_holds_the_uniform_cells_bytes(rule):
  """Gemma 3 270M's config (no weights): for every budget and profile the
  layer budgets sum to the uniform cell's slots and the kept caches hold
  the same bytes; every layer between its floor and its window."""
  caps = ev.layer_caps(GEMMA, PROTECTED)
  for b in (64, 256, 512, 1024, 2048, 4096):
    uniform = cache_lib.window_capped_budgets(GEMMA, b, PROTECTED)
    uniform_bytes = _kept_bytes(GEMMA, uniform)
    floor = max(PROTECTED.size, int(0.25 * b))
    for s in _profiles(GEMMA.num_layers):
      for min_fraction in (0.25, 0.0):
        got = ev.matched_layer_budgets(GEMMA, s, b, protected=PROTECTED,
                                       min_fraction=min_fraction, rule=rule)
        assert sum(got) == sum(uniform) == ev.uniform_total(GEMMA, b,
                                                            PROTECTED)
        assert _kept_bytes(GEMMA, got) == uniform_bytes
        for g, c in zip(got, caps):
          lo = PROTECTED.size if min_fraction == 0 else floor
          assert min(lo, c or lo) <= g <= (c or sum(uniform))
  # Flat profiles are the uniform cell itself.
  for b in (256, 1024, 2048):
    assert ev.matched_layer_budgets(
        GEMMA, [0.1] * GEMMA.num_layers, b, protected=PROTECTED,
        rule=rule) == cache_lib.window_capped_budgets(GEMMA, b, PROTECTED)


def test_the_earlier_unmatched_total_holds_more_than_the_uniform_cell():
  """budget x layers shared with window caps (matched_memory=False, the
  earlier allocation) puts the windows' excess on the global layers."""
  s = np.linspace(0, 1, GEMMA.num_layers)
  for b, uniform in ((1024, 10752), (2048, 13824)):
    floor = max(PROTECTED.size, b // 4)
    unmatched = ev.layer_budgets(s, b * GEMMA.num_layers, rule="power",
                                 floor=floor,
                                 caps=ev.window_caps(GEMMA, floor))
    assert sum(unmatched) == b * GEMMA.num_layers > uniform
    matched = ev.matched_layer_budgets(GEMMA, s, b, protected=PROTECTED,
                                       rule="power")
    assert sum(matched) == uniform


def test_matched_budgets_refuse_bad_settings():
  s = [0.1] * GEMMA.num_layers
  with pytest.raises(ValueError, match="min_fraction"):
    ev.matched_layer_budgets(GEMMA, s, 256, protected=PROTECTED,
                             min_fraction=1.5)
  with pytest.raises(ValueError, match="below the minimum"):
    ev.matched_layer_budgets(GEMMA, s, 8, protected=PROTECTED)
  with pytest.raises(ValueError, match="layer sensitivities for a model"):
    ev.matched_layer_budgets(GEMMA, s[:3], 256, protected=PROTECTED)


@pytest.fixture(scope="module")
def tiny():
  return model_lib.random_model(
      model_lib.tiny(sliding_window=16, vocab_size=64), seed=0)


def _conversation(n=150, seed=0):
  rng = np.random.default_rng(seed)
  return [2] + list(rng.integers(3, 64, n - 1))


def _observations():
  rng = np.random.default_rng(1)
  return [list(rng.integers(3, 64, n)) for n in (9, 20, 14)]


def test_the_episodic_prefill_with_matched_budgets_holds_the_uniform_bytes(
    tiny):
  """Through the prefill itself (no room left after the last block): the
  matched allocation keeps its budgets and its caches hold exactly the
  uniform cell's bytes."""
  protected = cache_lib.Protected(2, 4)
  eviction = ev.Eviction(24, chunk_size=16, protected=protected)
  budgets = ev.matched_layer_budgets(tiny.config, [0.0, 0.5, 1.0], 24,
                                     protected=protected)
  assert sum(budgets) == 16 + 16 + 24 and budgets != (16, 16, 24)
  context = _conversation(80)
  uniform = ev.prefill_episodes(tiny, ev.episode_scorer(), eviction,
                                context, _observations(), room=0)
  matched = ev.prefill_episodes(tiny, ev.episode_scorer(), eviction,
                                context, _observations(), room=0,
                                layer_budgets=budgets)
  for b, layer in zip(budgets, matched.cache.layers):
    assert np.all(np.sum(np.asarray(layer.pos) >= 0, axis=-1) == b)
  assert matched.cache.num_bytes() == uniform.cache.num_bytes()


# In-episode scorers against numpy.


def _view(seed, *, window=None, softcap=None, b=2, k=2, g=2, s=11, t=5,
          h=8, in_window=False):
  """A view with shuffled slot order, empty slots, a padding query and GQA
  groups of g; queries right after the cached tokens (in_window: the last
  two cached tokens are at the first queries' positions)."""
  rng = np.random.default_rng(seed)
  pos = np.stack([np.stack([rng.permutation(s) for _ in range(k)])
                  for _ in range(b)]).astype(np.int32)
  pos[:, :, :2] = np.where(rng.random((b, k, 2)) < 0.7, -1, pos[:, :, :2])
  start = s - 2 if in_window else s
  qpos = np.tile(np.arange(start, start + t, dtype=np.int32), (b, 1))
  qpos[0, 0] = -1                                          # Padding query.
  return scorers.LayerView(
      keys=jnp.asarray(rng.normal(size=(b, k, s, h)), jnp.float32),
      values=jnp.asarray(rng.normal(size=(b, k, s, h)), jnp.float32),
      positions=jnp.asarray(pos), context_length=jnp.full((b,), s, jnp.int32),
      window=window, logit_softcap=softcap,
      queries=jnp.asarray(rng.normal(size=(b, t, k * g, h)), jnp.float32),
      query_positions=jnp.asarray(qpos))


def _np_probs(view):
  """[B, K, G, T, S] softmax attention by brute force (0 where masked)."""
  keys = np.asarray(view.keys, np.float64)
  q = np.asarray(view.queries, np.float64)
  pos, qpos = np.asarray(view.positions), np.asarray(view.query_positions)
  b, k, s, _ = keys.shape
  t, n = q.shape[1], q.shape[2]
  g = n // k
  out = np.zeros((b, k, g, t, s))
  for bi in range(b):
    for ki in range(k):
      for gi in range(g):
        for ti in range(t):
          if qpos[bi, ti] < 0:
            continue
          seen = [j for j in range(s) if 0 <= pos[bi, ki, j] <= qpos[bi, ti]
                  and (view.window is None
                       or qpos[bi, ti] - pos[bi, ki, j] < view.window)]
          if not seen:
            continue
          logit = np.array([q[bi, ti, ki * g + gi] @ keys[bi, ki, j]
                            for j in seen])
          if view.logit_softcap is not None:
            logit = np.tanh(logit / view.logit_softcap) * view.logit_softcap
          p = np.exp(logit - logit.max())
          out[bi, ki, gi, ti, seen] = p / p.sum()
  return out


def _np_edges(view, score):
  """Empty slots -inf; slots at or after the first query +inf."""
  pos, qpos = np.asarray(view.positions), np.asarray(view.query_positions)
  start = np.where(qpos >= 0, qpos, np.iinfo(np.int32).max).min(1)
  score = np.where(pos >= start[:, None, None], np.inf, score)
  return np.where(pos >= 0, score, -np.inf)


def np_kvzip(view):
  """max over the window's queries and the group's heads, no pooling."""
  return _np_edges(view, _np_probs(view).max(axis=(2, 3)))


def np_snapkv(view, kernel=5):
  """Mean over the group and the valid queries, then a zero-padded
  average pool of width `kernel` over the tokens before the window, in
  position order."""
  probs = _np_probs(view)
  qpos = np.asarray(view.query_positions)
  num_q = np.maximum((qpos >= 0).sum(1), 1)
  attn = probs.sum(3).mean(2) / num_q[:, None, None]           # [B, K, S]
  pos = np.asarray(view.positions)
  start = np.where(qpos >= 0, qpos, np.iinfo(np.int32).max).min(1)
  out = np.zeros_like(attn)
  half = kernel // 2
  for bi in range(attn.shape[0]):
    for ki in range(attn.shape[1]):
      before = [j for j in np.argsort(pos[bi, ki], kind="stable")
                if 0 <= pos[bi, ki, j] < start[bi]]
      seq = np.array([attn[bi, ki, j] for j in before])
      for r, j in enumerate(before):
        out[bi, ki, j] = seq[max(0, r - half):r + half + 1].sum() / kernel
  return _np_edges(view, out)


CASES = [dict(), dict(window=6), dict(softcap=2.0), dict(in_window=True),
         dict(window=4, in_window=True, g=1, k=3)]


@pytest.mark.parametrize("case", CASES)
def test_kvzip_scorer_matches_numpy(case):
  view = _view(0, **case)
  got = np.asarray(ev.KVzipMaxScorer().score(view))
  np.testing.assert_allclose(got, np_kvzip(view), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("case", CASES)
def test_snapkv_scorer_matches_numpy(case):
  view = _view(1, **case)
  got = np.asarray(ev.episode_scorer("snapkv").score(view))
  np.testing.assert_allclose(got, np_snapkv(view), rtol=1e-5, atol=1e-7)


def test_the_two_scorers_rank_differently():
  """The max and the pooled mean are different rules (a check that the
  references are not trivially equal)."""
  view = _view(2, s=30, t=6)
  a, b = np_kvzip(view), np_snapkv(view)
  rank = lambda x: np.argsort(-x, axis=-1, kind="stable")
  assert not np.array_equal(rank(a), rank(b))


# Defaults and options.


def test_the_papers_options_are_the_defaults():
  assert ev.EPISODE_SCORERS == ("kvzip", "snapkv")
  assert ev.RULES == ("paper", "power")
  assert ev.EpisodicSettings().scorer == "kvzip"
  assert isinstance(ev.episode_scorer(), ev.KVzipMaxScorer)
  assert ev.episode_scorer("snapkv") == scorers.get_scorer("snapkv")
  assert isinstance(ev.MedoidBlendScorer(
      learned=scorers.get_scorer("knorm")).observer, ev.KVzipMaxScorer)
  with pytest.raises(ValueError, match="unknown in-episode scorer"):
    ev.EpisodicSettings(scorer="h2o")
  with pytest.raises(ValueError, match="unknown in-episode scorer"):
    ev.episode_scorer("tova")


def test_answer_conversation_uses_the_settings_scorer(monkeypatch):
  """Given no scorer, answer_conversation prefills with settings.scorer's."""
  from kvp_jax.eviction import _conversation
  from kvp_jax.samples import long_conversations as lc
  model = model_lib.load_model({"name": "tiny_gemma_vocab",
                                "source": "random"})
  samples = lc.generate_long_conversations(1, 500, model.tokenizer, seed=3,
                                           max_new_tokens=2)
  seen = []

  class Stop(Exception):
    pass

  def spy(model, scorer, *args, **kwargs):
    seen.append(scorer)
    raise Stop
  monkeypatch.setattr(_conversation, "prefill_episodes", spy)
  for name, cls in (("kvzip", ev.KVzipMaxScorer),
                    ("snapkv", scorers.SnapKVScorer)):
    settings = ev.EpisodicSettings(num_episodes=2, utterances=4, medoids=1,
                                   restarts=2, scorer=name)
    with pytest.raises(Stop):
      ev.answer_conversation(model, None, ev.Eviction(48, chunk_size=64),
                             samples[:2], settings)
    assert type(seen[-1]) is cls
  knorm = scorers.get_scorer("knorm")
  with pytest.raises(Stop):
    ev.answer_conversation(model, knorm, ev.Eviction(48, chunk_size=64),
                           samples[:2], settings)
  assert seen[-1] is knorm
