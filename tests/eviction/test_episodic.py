"""Episodic caches (EpiCache): episodes, routing, block-wise prefill scored
by the medoid, sensitivity-aware layer budgets, the KVP blend."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import cache as cache_lib
from kvp_jax import eviction as ev
from kvp_jax import inference
from kvp_jax import model as model_lib
from kvp_jax import scorers
from kvp_jax.eviction import _sensitivity


@pytest.fixture(scope="module")
def tiny():
  config = model_lib.tiny(sliding_window=16, vocab_size=64)
  return model_lib.random_model(config, seed=0)


def _clusters(seed=0, per=5, dims=8, noise=0.1):
  """Unit points around 3 axes, in the window order a, b, c, a."""
  rng = np.random.default_rng(seed)
  axes = np.eye(dims)[:3]
  x = np.concatenate([axes[i] + noise * rng.normal(size=(per, dims))
                      for i in (0, 1, 2, 0)])
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_kmeans_episodes_are_deterministic_for_a_seed():
  x = _clusters()
  a = ev.cluster_episodes(x, 3, jax.random.key(7), medoids_per_episode=2)
  b = ev.cluster_episodes(x, 3, jax.random.key(7), medoids_per_episode=2)
  np.testing.assert_array_equal(a.labels, b.labels)
  np.testing.assert_array_equal(a.centroids, b.centroids)
  assert a.medoids == b.medoids
  # The planted clusters, numbered by their first window; medoids inside.
  want = np.repeat([0, 1, 2, 0], 5)
  np.testing.assert_array_equal(a.labels, want)
  for e, medoid in enumerate(a.medoids):
    assert len(medoid) == 2 and all(a.labels[i] == e for i in medoid)
    assert list(medoid) == sorted(medoid)


def test_the_medoid_is_the_window_nearest_the_centroid():
  x = _clusters(seed=1)
  eps = ev.cluster_episodes(x, 3, jax.random.key(0))
  for e, (m,) in enumerate(eps.medoids):
    members = np.flatnonzero(eps.labels == e)
    assert m == members[np.argmax(x[members] @ eps.centroids[e])]


def test_kmeans_refuses_more_episodes_than_windows():
  with pytest.raises(ValueError, match="episodes for 4 windows"):
    ev.cluster_episodes(np.eye(4), 5, jax.random.key(0))


def test_a_question_routes_to_the_episode_of_its_fact_window():
  x = _clusters(seed=2)
  eps = ev.cluster_episodes(x, 3, jax.random.key(0))
  fact_window = 12                       # In the third block (axis 2).
  rng = np.random.default_rng(3)
  question = x[fact_window] + 0.2 * rng.normal(size=x.shape[1])
  for by in ("centroid", "medoid"):
    assert ev.route(question, eps, by=by) == eps.labels[fact_window] == 2
  # A batch of questions, one near each axis.
  got = ev.route(np.eye(8)[[1, 0, 2]], eps)
  np.testing.assert_array_equal(got, [1, 0, 2])


def test_routing_with_the_decoders_own_embeddings(tiny):
  """Windows of three disjoint token groups embedded by the tiny decoder's
  input embeddings; a question made of a fact window's tokens goes to that
  window's episode."""
  rng = np.random.default_rng(0)
  groups = [np.arange(3, 10), np.arange(20, 27), np.arange(40, 47)]
  order = [0, 0, 1, 1, 2, 2, 0, 1]
  windows = [list(rng.choice(groups[g], 12)) for g in order]
  for kind in ("embedding", "middle", "hidden"):
    emb = ev.embed_tokens(tiny, windows, kind=kind)
    assert emb.shape == (8, tiny.config.width)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
  emb = ev.embed_tokens(tiny, windows)
  eps = ev.cluster_episodes(emb, 3, jax.random.key(0))
  np.testing.assert_array_equal(eps.labels, [0, 0, 1, 1, 2, 2, 0, 1])
  fact = 5
  question = ev.embed_tokens(tiny, [windows[fact][:6]])
  assert ev.route(question, eps)[0] == eps.labels[fact] == 2


def test_tfidf_against_a_worked_example():
  """Two documents [1, 2], [1, 3]: idf(1) = log(3/3) + 1 = 1, idf(2) =
  idf(3) = log(3/2) + 1; the list [1, 1, 2, 9] is (1 + log 2, idf(2), 0)
  normalised (9 is in no document); a list of unknown ids is a zero row."""
  rows = ev.tfidf([[1, 1, 2, 9], [9, 9]], [[1, 2], [1, 3]])
  want = np.array([1 + np.log(2), np.log(1.5) + 1, 0.0])
  np.testing.assert_allclose(rows[0], want / np.linalg.norm(want), rtol=1e-6)
  np.testing.assert_array_equal(rows[1], 0.0)
  with pytest.raises(ValueError, match="documents with tokens"):
    ev.tfidf([[1]], [[]])


def test_routing_by_tfidf(tiny):
  """The same disjoint token groups as above, clustered and routed by
  tf-idf over the windows: the question goes to its fact's episode though
  half of it is a token every window holds (which tf-idf weighs least)."""
  rng = np.random.default_rng(0)
  groups = [np.arange(3, 10), np.arange(20, 27), np.arange(40, 47)]
  order = [0, 0, 1, 1, 2, 2, 0, 1]
  windows = [[2] + list(rng.choice(groups[g], 12)) for g in order]
  emb = ev.embed_tokens(tiny, windows, kind="tfidf")
  assert emb.shape == (8, 1 + 21)                # Token 2 and the groups'.
  eps = ev.cluster_episodes(emb, 3, jax.random.key(0))
  np.testing.assert_array_equal(eps.labels, [0, 0, 1, 1, 2, 2, 0, 1])
  question = ev.embed_tokens(tiny, [[2, 2, 2] + windows[5][1:4]],
                             kind="tfidf", documents=windows)
  assert ev.route(question, eps)[0] == eps.labels[5] == 2
  assert ev.route(question, eps, by="window")[0] == 2


def test_routing_to_the_nearest_window():
  """by="window": the episode of the most similar window, where the
  centroid would choose another episode."""
  unit = lambda v: np.asarray(v, np.float32) / np.linalg.norm(v)
  # Episode 0: windows along x and y; episode 1: two windows near z.
  emb = np.stack([unit([1, 0, 0]), unit([0, 1, 0]), unit([0.1, 0.1, 1]),
                  unit([-0.1, 0.1, 1])])
  eps = ev.Episodes(labels=np.array([0, 0, 1, 1]),
                    centroids=np.stack([unit([1, 1, 0]), unit([0, 0.2, 1])]),
                    medoids=((0,), (2,)), embeddings=emb)
  question = unit([1, 0, 0.8])       # Nearest window 0; nearest centroid 1.
  assert ev.route(question, eps, by="centroid") == 1
  assert ev.route(question, eps, by="window") == 0
  with pytest.raises(ValueError, match="unknown routing"):
    ev.route(question, eps, by="nearest")


def test_the_middle_embedding_is_the_first_half_of_the_decoder(tiny):
  """"middle": the final-normed hidden states of a decoder cut after
  num_layers // 2 layers (the later layers' parameters unread)."""
  import dataclasses
  from kvp_jax import model as model_lib
  half = tiny.config.num_layers // 2
  cut_config = dataclasses.replace(tiny.config, num_layers=half)
  params = {k: v for k, v in tiny.params.items()
            if not (k.startswith("layer_") and int(k.split("_")[1]) >= half)}
  assert len(params) < len(tiny.params)
  cut = model_lib.Pretrained(cut_config, params, None, "x", "random")
  windows = [list(range(3, 15)), list(range(20, 29)), list(range(40, 52))]
  middle = ev.embed_tokens(tiny, windows, kind="middle")
  np.testing.assert_allclose(middle, ev.embed_tokens(cut, windows,
                                                     kind="hidden"),
                             rtol=1e-5, atol=1e-6)
  assert not np.allclose(middle, ev.embed_tokens(tiny, windows,
                                                 kind="hidden"), atol=1e-3)


def test_split_windows_and_window_of():
  text = "A: hi\nB: yo\n\nA: x\nB: y\nA: z"
  w = ev.split_windows(text, 2)
  assert [x.text for x in w] == ["A: hi\nB: yo", "A: x\nB: y", "A: z"]
  assert text[w[1].char_start:w[1].char_end] == "A: x\nB: y"
  assert ev.window_of(w, text.index("B: y\n")) == 1
  with pytest.raises(ValueError, match="positive int"):
    ev.split_windows(text, 0)


def _conversation(n=150, seed=0):
  rng = np.random.default_rng(seed)
  return [2] + list(rng.integers(3, 64, n - 1))


def _observations():
  rng = np.random.default_rng(1)
  return [list(rng.integers(3, 64, n)) for n in (9, 20, 14)]


def test_episodic_prefill_keeps_peak_slots_within_budget_plus_block(tiny):
  context = _conversation()
  budget, block = 24, 16
  eviction = ev.Eviction(budget, chunk_size=block,
                         protected=cache_lib.Protected(2, 4))
  pre = ev.prefill_episodes(tiny, scorers.get_scorer("snapkv"), eviction,
                            context, _observations(), room=32)
  assert pre.peak_slots <= budget + block
  assert pre.cache.layers[0].k.shape[0] == 3              # One row each.
  kept = []
  for layer in pre.cache.layers:
    pos = np.asarray(layer.pos)
    assert np.all(np.sum(pos >= 0, axis=-1) <= budget)
    # Only conversation tokens: the medoid's keys were never kept.
    assert pos.max() == len(context) - 1
    kept.append(np.sort(pos, axis=-1))
  # The medoids differ, so what the episodes keep differs.
  global_layer = kept[2]
  assert not np.array_equal(global_layer[0], global_layer[1])
  out = ev.answer_questions(tiny, pre, [2, 0], [[5, 6, 7], [8, 9]], 8,
                            eos_id=-1)
  assert [len(o) for o in out] == [8, 8]


def test_each_episode_row_is_its_own_prefill(tiny):
  """Batching episodes (observations of other lengths, left-padded) keeps
  what each episode's own prefill would; a query-free scorer ignores the
  medoid, so every episode keeps the same tokens."""
  context, obs = _conversation(), _observations()
  eviction = ev.Eviction(24, chunk_size=16)
  snap = scorers.get_scorer("snapkv")
  both = ev.prefill_episodes(tiny, snap, eviction, context, obs, room=16)
  for e in (0, 1):
    alone = ev.prefill_episodes(tiny, snap, eviction, context, [obs[e]],
                                room=16)
    for a, b in zip(both.cache.layers, alone.cache.layers):
      np.testing.assert_array_equal(np.sort(np.asarray(a.pos)[e], -1),
                                    np.sort(np.asarray(b.pos)[0], -1))
  knorm = ev.prefill_episodes(tiny, scorers.get_scorer("knorm"), eviction,
                              context, obs, room=16)
  for layer in knorm.cache.layers:
    pos = np.sort(np.asarray(layer.pos), -1)
    assert np.array_equal(pos[0], pos[1]) and np.array_equal(pos[0], pos[2])


def test_a_budget_above_the_context_answers_as_the_full_cache(tiny):
  context = _conversation(100)
  questions = [[5, 6, 7, 8], [9, 10]]
  want = inference.generate(tiny, [context + q for q in questions], 6,
                            eos_id=-1)
  pre = ev.prefill_episodes(tiny, scorers.get_scorer("snapkv"),
                            ev.Eviction(128, chunk_size=32), context,
                            _observations()[:2], room=32)
  got = ev.answer_questions(tiny, pre, [1, 0], questions, 6, eos_id=-1)
  assert got == want


def test_episodic_prefill_with_layer_budgets(tiny):
  protected = cache_lib.Protected(2, 4)
  eviction = ev.Eviction(24, chunk_size=16, protected=protected)
  budgets = (8, 12, 40)
  pre = ev.prefill_episodes(tiny, scorers.get_scorer("knorm"), eviction,
                            _conversation(), _observations(), room=16,
                            layer_budgets=budgets)
  for b, layer in zip(budgets, pre.cache.layers):
    held = np.sum(np.asarray(layer.pos) >= 0, axis=-1)
    assert np.all(held == b)
  assert pre.peak_slots <= max(budgets) + 16
  with pytest.raises(ValueError, match="layer budgets for a model of 3"):
    ev.prefill_episodes(tiny, scorers.get_scorer("knorm"), eviction,
                        _conversation(), _observations(), 16,
                        layer_budgets=(8, 8))
  with pytest.raises(ValueError, match="below the minimum"):
    ev.prefill_episodes(tiny, scorers.get_scorer("knorm"), eviction,
                        _conversation(), _observations(), 16,
                        layer_budgets=(8, 3, 8))


def test_episodic_prefill_refuses_what_it_cannot_give(tiny):
  with pytest.raises(ValueError, match="needs a budget"):
    ev.prefill_episodes(tiny, scorers.get_scorer("snapkv"), ev.Eviction(None),
                        _conversation(), _observations(), 8)
  with pytest.raises(ValueError, match="attention_sums"):
    ev.prefill_episodes(tiny, scorers.get_scorer("h2o"), ev.Eviction(24),
                        _conversation(), _observations(), 8)


def test_answer_questions_checks_room_and_episodes(tiny):
  pre = ev.prefill_episodes(tiny, scorers.get_scorer("knorm"),
                            ev.Eviction(24, chunk_size=16), _conversation(),
                            _observations(), room=8)
  with pytest.raises(ValueError, match="larger room"):
    ev.answer_questions(tiny, pre, [0], [[5, 6]], 16, eos_id=-1)
  with pytest.raises(ValueError, match="must name one of the 3 episodes"):
    ev.answer_questions(tiny, pre, [3], [[5]], 1, eos_id=-1)


def test_layer_budgets_sum_to_the_total_and_follow_the_profile():
  s = [0.0, 0.3, 0.1, 0.6, 0.2]
  for alpha in (0.5, 1.0, 2.0):
    b = ev.layer_budgets(s, 5 * 64, alpha=alpha, floor=20)
    assert sum(b) == 5 * 64 and min(b) >= 20
    order = np.argsort(s, kind="stable")
    assert all(b[i] <= b[j] for i, j in zip(order, order[1:]))
    assert b[0] == 20 and b[3] == max(b)
  # A sharper alpha moves more of the budget to the most sensitive layer.
  assert ev.layer_budgets(s, 320, alpha=2.0, floor=20)[3] > ev.layer_budgets(
      s, 320, alpha=1.0, floor=20)[3]
  assert ev.layer_budgets(s, 320, alpha=0.0, floor=20) == (64,) * 5


def test_layer_budgets_respect_caps_and_share_the_excess():
  b = ev.layer_budgets([1.0, 0.1, 0.1], 300, alpha=1.0, floor=10,
                       caps=[50, None, None])
  assert b[0] == 50 and sum(b) == 300 and b[1] == b[2] == 125
  with pytest.raises(ValueError, match="below 3 layers x the floor"):
    ev.layer_budgets([1, 1, 1], 20, floor=10)
  with pytest.raises(ValueError, match="alpha"):
    ev.layer_budgets([1, 1], 40, floor=10, alpha=-1)


def test_layer_profile_is_saved_and_reused(tmp_path, monkeypatch):
  # Global layers only: in `tiny` the probe's keys see only the unevicted
  # window below the single global layer, so nothing would deviate.
  g = model_lib.GLOBAL
  tiny = model_lib.random_model(model_lib.tiny(
      vocab_size=64, attention_pattern=(g, g, g)), seed=0)
  prompts = [_conversation(120, seed=3)]
  eviction = ev.Eviction(24, protocol="chunked", chunk_size=16)
  path = tmp_path / "profile.json"
  s = ev.load_or_profile(path, tiny, prompts, scorers.get_scorer("knorm"),
                         eviction, probe_tokens=32)
  assert s.shape == (3,)
  # Layer 0's keys never see the cache; those above it do.
  assert abs(s[0]) < 1e-5 and s[1] > 1e-4 and s[2] > 1e-4
  saved = json.loads(path.read_text())
  assert saved["model_fingerprint"] == tiny.fingerprint
  np.testing.assert_allclose(saved["sensitivity"], s)

  def boom(*a, **k):
    raise AssertionError("profiled again")
  monkeypatch.setattr(_sensitivity, "profile_sensitivity", boom)
  again = ev.load_or_profile(path, tiny, prompts, scorers.get_scorer("knorm"),
                             eviction, probe_tokens=32)
  np.testing.assert_allclose(again, s)
  other = model_lib.random_model(tiny.config, seed=1)
  with pytest.raises(ValueError, match="not on this one"):
    ev.load_or_profile(path, other, prompts, scorers.get_scorer("knorm"),
                       eviction)


def _view(seed=0, b=1, k=2, s=12, t=4, n=4, h=16):
  keys = jax.random.split(jax.random.key(seed), 3)
  pos = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, k, s))
  return scorers.LayerView(
      keys=jax.random.normal(keys[0], (b, k, s, h)),
      values=jax.random.normal(keys[1], (b, k, s, h)), positions=pos,
      context_length=jnp.full((b,), s, jnp.int32),
      queries=jax.random.normal(keys[2], (b, t, n, h)),
      query_positions=jnp.broadcast_to(jnp.arange(s, s + t), (b, t)))


def test_the_blend_ranks_as_each_side_at_the_ends():
  view = _view()
  knorm, snap = scorers.get_scorer("knorm"), scorers.get_scorer("snapkv")
  rank = lambda x: np.argsort(-np.asarray(x), axis=-1, kind="stable")
  learned = ev.MedoidBlendScorer(learned=knorm, weight=1.0).score(view)
  np.testing.assert_array_equal(rank(learned), rank(knorm.score(view)))
  observed = ev.MedoidBlendScorer(learned=knorm, weight=0.0).score(view)
  np.testing.assert_array_equal(rank(observed),
                                rank(ev.KVzipMaxScorer().score(view)))
  observed = ev.MedoidBlendScorer(learned=knorm, observer=snap,
                                  weight=0.0).score(view)
  np.testing.assert_array_equal(rank(observed), rank(snap.score(view)))
  mid = ev.MedoidBlendScorer(learned=knorm, weight=0.5).score(view)
  assert not np.array_equal(rank(mid), rank(learned))
  with pytest.raises(ValueError, match="query-free"):
    ev.MedoidBlendScorer(learned=snap)


def test_a_long_conversation_end_to_end():
  """A generated conversation (real tokenizer, random tiny decoder): every
  question is routed to an episode and answered through its cache."""
  from kvp_jax.samples import long_conversations as lc
  model = model_lib.load_model({"name": "tiny_gemma_vocab",
                                "source": "random"})
  samples = lc.generate_long_conversations(1, 700, model.tokenizer, seed=3,
                                           max_new_tokens=4)
  settings = ev.EpisodicSettings(num_episodes=3, utterances=3, medoids=1,
                                 restarts=2)
  windows, episodes, observations = ev.build_episodes(
      model, samples[0].context, settings)
  assert episodes.num_episodes == 3 == len(observations)
  assert len(windows) == len(episodes.labels)
  rows = ev.answer_conversation(
      model, scorers.get_scorer("snapkv"), ev.Eviction(64, chunk_size=64),
      samples, settings)
  assert [r["sample"] for r in rows] == [s.id for s in samples]
  assert all(0 <= r["episode"] < 3 and 0 <= r["fact_episode"] < 3
             for r in rows)
  assert all(r["peak_slots"] <= 64 + 64 for r in rows)
  with pytest.raises(ValueError, match="different contexts"):
    other = lc.generate_long_conversations(1, 700, model.tokenizer, seed=4)
    ev.answer_conversation(model, scorers.get_scorer("snapkv"),
                           ev.Eviction(64), samples[:1] + other[:1], settings)
  assert ev.routing_text(samples[0].question).startswith(("What", "Which",
                                                          "In", "On"))


def test_full_size_gemma_by_shape():
  """Gemma 3 270M (one KV head, 512-token windows) traced, not run: four
  episodes with profiled layer budgets hold budget + room slots each (a
  sliding-window layer at most its window)."""
  config = model_lib.gemma3_270m()
  params = jax.eval_shape(lambda: model_lib.init_params(config,
                                                        jax.random.key(0)))
  floor = 64
  budgets = ev.layer_budgets(np.linspace(0, 1, config.num_layers),
                             256 * config.num_layers, alpha=1.0, floor=floor,
                             caps=ev.window_caps(config, floor))
  assert sum(budgets) == 256 * config.num_layers
  seen = {}

  def run(params):
    m = model_lib.Pretrained(config, params, None, "x", "shape")
    pre = ev.prefill_episodes(
        m, scorers.get_scorer("snapkv"),
        ev.Eviction(256, chunk_size=512, protected=cache_lib.Protected(4, 16)),
        [2] + [5] * 1500, [[7] * 150, [8] * 90, [9] * 200, [10] * 120],
        room=96, layer_budgets=budgets)
    seen["peak"] = pre.peak_slots
    return pre.cache

  cache = jax.eval_shape(run, params)
  for i, (b, layer) in enumerate(zip(budgets, cache.layers)):
    window = config.layer_window(i)
    slots = b + 96 if window is None else max(b, min(b + 96, window))
    assert layer.k.shape == (4, 1, slots, config.head_dim)
  assert seen["peak"] <= max(budgets) + 512
