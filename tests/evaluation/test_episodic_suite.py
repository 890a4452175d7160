"""The episodic suite kind on a tiny model: long conversations through
episodic caches, the KVP blend, sensitivity budgets, resuming."""

import jax
import pytest

from experiments import common
from kvp_jax import evaluation
from kvp_jax import model as model_lib
from kvp_jax import policy as policy_lib
from kvp_jax.evaluation import _conversations as text_lib
from kvp_jax.evaluation import _suites


@pytest.fixture(scope="module")
def model():
  return model_lib.load_model({"name": "tiny_gemma_vocab", "source": "random"})


def _policy(tmp_path, model):
  c = model.config
  config = policy_lib.AgentConfig(hidden=16, feature_width=16, position_dim=4,
                                  max_position=1024, dtype="float32")
  return policy_lib.save_artifact(tmp_path / "p.kvp", policy_lib.PolicyArtifact(
      agent_config=config, params=policy_lib.init_agents(
          config, c.num_agents, c.head_dim, jax.random.key(0)),
      model_name=c.name, model_fingerprint=model.fingerprint,
      num_layers=c.num_layers, num_kv_heads=c.num_kv_heads,
      head_dim=c.head_dim, layer_start=0, layer_stop=c.num_layers, info={}))


def _suite(tmp_path):
  return {"kind": "episodic", "name": "conv",
          "conversations": {"num_conversations": 1, "target_length": 600,
                            "seed": 5, "max_new_tokens": 4},
          "episodic": {"num_episodes": 3, "utterances": 3, "medoids": 1,
                       "restarts": 2},
          "layer_profile": str(tmp_path / "profile.json"), "alpha": 1.0,
          "blend_weight": 0.5}


def test_episodic_suite_runs_and_resumes(model, tmp_path, monkeypatch):
  c = common.base_config()
  c.model = common.model_config("tiny_gemma_vocab", source="random")
  c.eval = common.eval_config(
      suites=[_suite(tmp_path)], scorers=["kvp", "snapkv", "h2o"],
      budgets=[48], protocol="chunked", chunk_size=64, batch_size=8,
      policy=str(_policy(tmp_path, model)))
  rows = evaluation.evaluate(c, tmp_path, model=model, progress=False)
  cells = {(r["scorer"], str(r["budget"])) for r in rows}
  # Every grid scorer as a plain baseline (h2o reads the block's attention),
  # then EpiCache and EpiCache with KVP blended in.
  assert cells == {("full", "full"), ("kvp", "48"), ("snapkv", "48"),
                   ("h2o", "48"), ("epicache", "48"), ("epicache+kvp", "48")}
  log = evaluation.SampleLog(tmp_path / "eval" / "samples.jsonl")
  episodic = [r for r in log.rows if r["scorer"].startswith("epicache")]
  assert len(episodic) == 2 * 4                  # 2 cells x 4 questions.
  assert all(0 <= r["episode"] < 3 and "routed_to_fact" in r
             for r in episodic)
  plain = [r for r in log.rows if r["scorer"] in ("kvp", "snapkv", "h2o")]
  assert len(plain) == 3 * 4 and all("episode" not in r for r in plain)
  # Every question names its conversation, so the paired intervals resample
  # conversations (one here: no interval).
  assert {r["cluster"] for r in log.rows} == {
      r["sample"].rsplit("-q", 1)[0] for r in log.rows}
  verdicts = (tmp_path / "eval" / "verdicts.jsonl").read_text()
  assert '"num_clusters": 1' in verdicts
  # Peak memory: one cache of at most budget + block slots per head for a
  # plain baseline; E caches (here with sensitivity-aware layer budgets)
  # for EpiCache.
  peak = {r["scorer"]: r["peak_bytes"] for r in log.rows}
  assert peak["epicache"] > peak["snapkv"] > 0
  assert all(r["peak_slots"] <= 48 + 64 for r in plain)
  text = (tmp_path / "eval" / "results.md").read_text()
  assert "peak KV cache memory" in text
  assert "epicache+kvp against the best baseline" in text
  assert (tmp_path / "profile.json").is_file()
  before = len(log.rows)
  # A rerun finds every cell in the sample log and recomputes none.
  from kvp_jax import eviction as eviction_lib

  def recomputed(*args, **kwargs):
    raise AssertionError("a logged cell was recomputed")
  monkeypatch.setattr(eviction_lib, "answer_compressed", recomputed)
  monkeypatch.setattr(eviction_lib, "answer_conversation", recomputed)
  evaluation.evaluate(c, tmp_path, model=model, progress=False)
  assert len(evaluation.SampleLog(tmp_path / "eval" / "samples.jsonl").rows
             ) == before


def test_episodic_suite_needs_conversations(model, tmp_path):
  from kvp_jax import samples as samples_lib
  samples_lib.write_samples(tmp_path / "x.jsonl", [samples_lib.Sample(
      id="a", task="t", context="A: hi", question="q?", answer_prefix=" A:",
      answers=["x"], max_new_tokens=2)])
  suite = {"kind": "episodic", "sources": [
      {"kind": "jsonl", "paths": [str(tmp_path / "x.jsonl")]}]}
  with pytest.raises(ValueError, match="no metadata conversation_id"):
    _suites.build_suite(suite, model.tokenizer)


def test_plain_baseline_equals_episodes_of_a_query_free_scorer(model):
  """A query-free scorer ignores the medoids, so every episode's cache is
  the plain baseline's one cache: same answers, E times the memory."""
  from kvp_jax import cache as cache_lib
  from kvp_jax import eviction as eviction_lib
  from kvp_jax import scorers as scorers_lib
  from kvp_jax.samples import long_conversations
  samples = long_conversations.generate_long_conversations(
      1, 600, model.tokenizer, 5, max_new_tokens=4)
  scorer = scorers_lib.get_scorer("keydiff")
  eviction = eviction_lib.Eviction(48, protocol="chunked", chunk_size=64,
                                   protected=cache_lib.Protected())
  plain = eviction_lib.answer_compressed(model, scorer, eviction, samples)
  settings = eviction_lib.EpisodicSettings(num_episodes=3, utterances=3,
                                           medoids=1, restarts=2)
  episodic = eviction_lib.answer_conversation(model, scorer, eviction,
                                              samples, settings)
  assert [r["prediction"] for r in plain] == [
      r["prediction"] for r in episodic]
  # Per episode (the rings' shared `end` scalars counted once for E rows).
  assert plain[0]["cache_bytes"] == pytest.approx(episodic[0]["cache_bytes"],
                                                  rel=1e-3)
  assert plain[0]["peak_bytes"] < episodic[0]["peak_bytes"] <= (
      3 * plain[0]["peak_bytes"])


def test_an_episodic_batch_is_one_whole_conversation():
  """Questions of one conversation share its compressed state, so they are
  never split across batches (nor mixed by prompt length)."""
  import types
  items = [types.SimpleNamespace(
      prompt=[0] * n, sample=types.SimpleNamespace(
          metadata={"conversation_id": c})) for c, n in
           (("a", 9), ("b", 3), ("a", 1), ("b", 7), ("a", 5))]
  batches = list(_suites.get_kind("episodic").batches(items, 2))
  assert [[i.sample.metadata["conversation_id"] for i in b]
          for b in batches] == [["a", "a", "a"], ["b", "b"]]
  # Other suites: batches of `size` by prompt length.
  assert [len(i.prompt) for b in _suites.get_kind("ruler").batches(items, 2)
          for i in b] == [1, 3, 5, 7, 9]


def _settings(**episodic):
  from kvp_jax import eviction as eviction_lib
  return eviction_lib.EpisodicSettings(**episodic)


def test_layer_budgets_follow_the_rule_and_match_the_uniform_memory(
    model, tmp_path):
  """The suite's layer budgets: by default the paper's rule, summing to
  what the uniform cell keeps; the earlier rule and total when pinned."""
  import json
  import types
  from kvp_jax import cache as cache_lib
  from kvp_jax import eviction as eviction_lib
  from kvp_jax.evaluation import _episodic_suite
  sensitivity = [0.0, 0.004, 0.02]
  path = tmp_path / "profile.json"
  path.write_text(json.dumps({
      "kind": "kvp_jax.layer_sensitivity", "version": 1,
      "model_fingerprint": model.fingerprint, "sensitivity": sensitivity}))
  sample = types.SimpleNamespace(context="A: hi\nB: yo")
  protected = cache_lib.Protected()
  eviction = eviction_lib.Eviction(48, protocol="chunked", chunk_size=64,
                                   protected=protected)
  suite = {"layer_profile": str(path), "calibration": "first_conversation"}
  got = _episodic_suite._layer_budgets(model, suite, _settings(), eviction,
                                       sample)
  assert got == eviction_lib.matched_layer_budgets(
      model.config, sensitivity, 48, protected=protected, rule="paper",
      alpha=1.3)
  assert sum(got) == eviction_lib.uniform_total(model.config, 48, protected)
  earlier = _episodic_suite._layer_budgets(
      model, dict(suite, alpha=1.0), _settings(rule="power",
                                               matched_memory=False),
      eviction, sample)
  floor = max(protected.size, 12)
  assert earlier == eviction_lib.layer_budgets(
      sensitivity, 48 * 3, rule="power", alpha=1.0, floor=floor,
      caps=eviction_lib.window_caps(model.config, floor))
  assert _episodic_suite._layer_budgets(
      model, {"layer_profile": ""}, _settings(), eviction, sample) is None


def test_the_epicache_cells_use_the_settings_scorer():
  """EPICACHE scores with episodic.scorer (KVzip-style by default), and
  EPICACHE_KVP blends KVP with the same observer."""
  import types
  from kvp_jax import cache as cache_lib
  from kvp_jax import eviction as eviction_lib
  from kvp_jax import scorers as scorers_lib
  from kvp_jax.evaluation import _episodic_suite
  grid = types.SimpleNamespace(
      include_full=False, scorers={"kvp": scorers_lib.get_scorer("knorm")},
      identity={}, budgets=[48], chunk_size=64,
      protected=cache_lib.Protected(),
      cell=lambda suite, name, budget, protocol=None: (name, budget))
  run = types.SimpleNamespace(grid=grid, suite="conv")
  for name, cls in (("kvzip", eviction_lib.KVzipMaxScorer),
                    ("snapkv", scorers_lib.SnapKVScorer)):
    cells = {c.cell[0]: c.scorer for c, by_episode in _episodic_suite._cells(
        run, {"blend_weight": 0.5, "plain": False}, _settings(scorer=name))}
    assert set(cells) == {"epicache", "epicache+kvp"}
    assert type(cells["epicache"]) is cls
    assert type(cells["epicache+kvp"].observer) is cls


def test_the_experiment_pins_the_earlier_options():
  """experiments/long_conversations.py reproduces its committed results:
  SnapKV in the episodes, the power rule, budget x layers in all."""
  from experiments import long_conversations
  from kvp_jax import eviction as eviction_lib
  ec = evaluation.EvalConfig.from_config(long_conversations.get_config())
  suites = ec.suite_dicts()
  assert [s["name"] for s in suites] == ["conversations_uniform",
                                         "conversations_sensitive"]
  for suite in suites:
    settings = eviction_lib.EpisodicSettings(**suite["episodic"])
    assert (settings.scorer, settings.rule, settings.matched_memory) == (
        "snapkv", "power", False)
    assert suite["alpha"] == 1.0 and suite["min_fraction"] == 0.25
    assert suite["calibration"] == "first_conversation"


def _conversations(model, n=2, seed=5):
  from kvp_jax.samples import long_conversations
  return long_conversations.generate_long_conversations(
      n, 600, model.tokenizer, seed, num_facts=2, max_new_tokens=4)


def test_the_calibration_text_is_disjoint_from_the_evaluated_one(model):
  """The default profile text: a conversation built from dialogues that no
  evaluated conversation uses (ids, texts and source dialogues disjoint)."""
  evaluated = _conversations(model)
  settings = {"conversations": {"target_length": 600}}
  prompts, info = text_lib.calibration_prompts(
      model.tokenizer, settings, evaluated)
  assert len(prompts) == 1 and 300 < len(prompts[0]) <= 600
  assert info["seed"] == text_lib.CALIBRATION_SEED
  used = {x for s in evaluated for x in s.metadata["sources"]}
  assert info["sources"] and not used & set(info["sources"])
  assert not {s.metadata["conversation_id"] for s in evaluated} & set(
      info["conversations"])
  texts = {s.context for s in evaluated}
  assert model.tokenizer.decode(prompts[0][1:]) not in texts
  # A record sharing one source dialogue with them is refused.
  with pytest.raises(ValueError, match="profile.json: its calibration"):
    text_lib.check_disjoint(
        dict(info, sources=evaluated[0].metadata["sources"][:1]),
        evaluated, "profile.json")


def test_a_profile_is_made_on_calibration_text_and_checked_on_reuse(
    model, tmp_path):
  import json
  import types
  from kvp_jax import cache as cache_lib
  from kvp_jax import eviction as eviction_lib
  from kvp_jax.evaluation import _episodic_suite
  evaluated = _conversations(model)
  path = tmp_path / "profile.json"
  eviction = eviction_lib.Eviction(48, protocol="chunked", chunk_size=64,
                                   protected=cache_lib.Protected())
  suite = {"layer_profile": str(path),
           "conversations": {"target_length": 600}}
  first = _episodic_suite._layer_budgets(model, suite, _settings(), eviction,
                                         evaluated[0], evaluated)
  record = json.loads(path.read_text())["calibration"]
  assert record["kind"] == "calibration" and record["sources"]
  # Reused as it is for the same conversations.
  assert _episodic_suite._layer_budgets(
      model, suite, _settings(), eviction, evaluated[1], evaluated) == first
  # Another suite whose conversations contain the calibration text: refused.
  overlapping = [types.SimpleNamespace(
      context="x", metadata={"conversation_id": "c",
                             "sources": record["sources"][:1]})]
  with pytest.raises(ValueError, match="overlaps the evaluated"):
    _episodic_suite._layer_budgets(model, suite, _settings(), eviction,
                                   overlapping[0], overlapping)
  # A profile without a calibration record (the earlier kind) is refused
  # unless the suite asks for the first conversation.
  record_free = json.loads(path.read_text())
  del record_free["calibration"]
  path.write_text(json.dumps(record_free))
  with pytest.raises(ValueError, match="records no calibration text"):
    _episodic_suite._layer_budgets(model, suite, _settings(), eviction,
                                   evaluated[0], evaluated)
  assert _episodic_suite._layer_budgets(
      model, dict(suite, calibration="first_conversation"), _settings(),
      eviction, evaluated[0], evaluated) == first


def test_routing_accuracy_counts_what_answering_routes(model):
  """routing_accuracy (no caches) agrees with the episode and fact episode
  answer_conversation reports; with one episode every question is routed
  to its fact's."""
  from kvp_jax import cache as cache_lib
  from kvp_jax import eviction as eviction_lib
  samples = _conversations(model, n=2, seed=7)
  settings = _settings(num_episodes=3, utterances=3, medoids=1, restarts=2)
  got = eviction_lib.routing_accuracy(model, samples, settings)
  eviction = eviction_lib.Eviction(48, protocol="chunked", chunk_size=64,
                                   protected=cache_lib.Protected())
  rows = []
  for c in ("long_conversations-600-7-0", "long_conversations-600-7-1"):
    rows += eviction_lib.answer_conversation(
        model, None, eviction,
        [s for s in samples if s.metadata["conversation_id"] == c], settings)
  hits = sum(r["episode"] == r["fact_episode"] for r in rows)
  assert {h["sample"]: h["hit"] for h in got.pop("hits")} == {
      r["sample"]: int(r["episode"] == r["fact_episode"]) for r in rows}
  assert got == {"questions": 4, "conversations": 2, "routed_to_fact": hits,
                 "accuracy": 100.0 * hits / 4}
  one = eviction_lib.routing_accuracy(model, samples,
                                      _settings(num_episodes=1))
  assert one["accuracy"] == 100.0
