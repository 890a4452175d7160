"""Trace diagnostics: each statistic against a brute-force numpy
reference, and the report of a synthetic store end to end."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines import diagnostics_job
from data_pipelines import trace_stats
from kvp_jax import model as model_lib
from kvp_jax import policy as policy_lib
from tests.training import synthetic


def _random(seed=0, a=3, b=4, t=50):
  rng = np.random.default_rng(seed)
  imp = rng.exponential(size=(a, b, t)) ** 3
  valid = rng.random((a, b, t)) < 0.8
  valid[0, 1] = False                                  # An empty ranked set.
  return imp, valid


def test_concentration_matches_sorting_each_row():
  imp, valid = _random()
  got = trace_stats.concentration(imp, valid, 0.1)
  for a in range(imp.shape[0]):
    for b in range(imp.shape[1]):
      x = np.sort(imp[a, b][valid[a, b]])[::-1]
      if x.size == 0:
        assert np.isnan(got[a, b])
        continue
      k = int(np.ceil(0.1 * x.size))
      np.testing.assert_allclose(got[a, b], x[:k].sum() / x.sum(), rtol=1e-12)
  # All of the importance on one token: the top share is 1.
  one = np.zeros((1, 1, 200))
  one[0, 0, 17] = 5.0
  assert trace_stats.concentration(one, np.ones_like(one, bool))[0, 0] == 1.0
  with pytest.raises(ValueError, match="fraction"):
    trace_stats.concentration(imp, valid, 0.0)


def test_kind_counts_match_brute_force():
  imp, valid = _random(1)
  rng = np.random.default_rng(2)
  kinds = {"x": rng.random(imp.shape[1:]) < 0.3,
           "y": rng.random(imp.shape[1:]) < 0.5}
  got = trace_stats.kind_counts(imp, valid, kinds, 0.2)
  for a in range(imp.shape[0]):
    top_n = ranked_n = 0
    top_k, ranked_k = {"x": 0, "y": 0}, {"x": 0, "y": 0}
    for b in range(imp.shape[1]):
      idx = np.flatnonzero(valid[a, b])
      if imp[a, b][idx].sum() <= 0:
        continue
      k = int(np.ceil(0.2 * idx.size))
      top = idx[np.argsort(-imp[a, b][idx], kind="stable")[:k]]
      top_n, ranked_n = top_n + k, ranked_n + idx.size
      for name, m in kinds.items():
        top_k[name] += m[b][top].sum()
        ranked_k[name] += m[b][idx].sum()
    assert got["top"][a] == top_n and got["ranked"][a] == ranked_n
    for name in kinds:
      assert got[f"top/{name}"][a] == top_k[name]
      assert got[f"ranked/{name}"][a] == ranked_k[name]
  shares = trace_stats.kind_shares(got)
  np.testing.assert_allclose(shares["x"][0], got["top/x"] / got["top"])


def test_piece_and_token_kinds():
  kinds = trace_stats.piece_kinds(["▁12", "abc", "▁", ",", "x9", "é"])
  assert kinds["digit"].tolist() == [True, False, False, False, True, False]
  assert kinds["word"].tolist() == [False, True, False, False, False, True]
  assert kinds["space_punct"].tolist() == [False, False, True, True, False,
                                           False]
  tokens = np.array([[0, 1, 2, 3, 4, 5] * 20])
  positions = np.arange(120)[None]
  masks = trace_stats.token_kinds(tokens, positions, np.array([120]), kinds)
  assert masks["digit"][0, :6].tolist() == kinds["digit"].tolist()
  assert masks["first_64"][0].sum() == 64 and masks["last_64"][0].sum() == 64
  assert set(trace_stats.token_kinds(tokens, positions, np.array([120]),
                                     {})) == {"first_64", "last_64"}


def test_cost_variance_matches_loops():
  rng = np.random.default_rng(3)
  costs = 1 + rng.random((6, 2, 5)) + np.arange(5)[None, None]
  informative = np.ones((2, 5), bool)
  informative[1, 0] = False
  v = trace_stats.cost_variance(costs, informative)
  for a in range(2):
    c = costs[:, a, informative[a]]
    between = np.var([c[:, j].mean() for j in range(c.shape[1])], ddof=1)
    within = np.mean([np.var(c[:, j], ddof=1) for j in range(c.shape[1])])
    np.testing.assert_allclose(v["between"][a], between)
    np.testing.assert_allclose(v["within"][a], within)
    np.testing.assert_allclose(v["between_share"][a],
                               between / (between + within))
  with pytest.raises(ValueError, match=">= 2 samples"):
    trace_stats.cost_variance(costs[:1], informative)


def test_sampled_costs_of_sharp_scores_are_the_argsort_costs():
  imp, valid = _random(4)
  scores = jnp.asarray(1000.0 * np.argsort(np.argsort(-imp, -1), -1) * -1.0)
  sampled = trace_stats.sampled_costs(jax.random.key(0), scores,
                                      jnp.asarray(imp), jnp.asarray(valid), 3)
  det = trace_stats.deterministic_costs(scores, jnp.asarray(imp),
                                        jnp.asarray(valid))
  ok = np.isfinite(np.asarray(det))
  for s in range(3):
    np.testing.assert_allclose(np.asarray(sampled[s])[ok],
                               np.asarray(det)[ok], rtol=1e-5)
  # Ranked by the importance itself, the cost is the oracle's: 1.
  oracle = trace_stats.deterministic_costs(jnp.asarray(imp), jnp.asarray(imp),
                                           jnp.asarray(valid))
  np.testing.assert_allclose(np.asarray(oracle)[ok], 1.0, rtol=1e-5)


def test_report_of_a_synthetic_store(tmp_path):
  synthetic.make_store(tmp_path / "traces", num_traces=24)
  config = synthetic.tiny_config(tmp_path / "traces")
  model = model_lib.load_model(config.model)
  c = model.config
  agents = policy_lib.AgentConfig(**{
      k: config.policy[k] for k in ("hidden", "feature_width", "position_dim",
                                    "max_position", "dtype")})
  policy = policy_lib.save_artifact(tmp_path / "p.kvp", policy_lib.PolicyArtifact(
      agent_config=agents, params=policy_lib.init_agents(
          agents, 2, 8, jax.random.key(0)),
      model_name=c.name, model_fingerprint=model.fingerprint,
      num_layers=2, num_kv_heads=1, head_dim=8, layer_start=0,
      layer_stop=2, info={}))
  report = diagnostics_job.run(config, tmp_path, policy=str(policy),
                               scorers=("random", "knorm", "keydiff"),
                               budgets=(24, 32), num_samples=4,
                               progress=False)
  assert report["num_traces"] == 6                   # Every 4th is validation.
  assert set(report["evicted_share"]) == {"oracle", "random", "knorm",
                                          "keydiff", "kvp"}
  for name, cost in report["normalised_cost"].items():
    assert len(cost) == 2 and all(x >= 1 - 1e-5 for x in cost), name
  np.testing.assert_allclose(report["normalised_cost"]["oracle"], 1.0,
                             rtol=1e-5)
  # The oracle evicts the least importance at every budget.
  for name, row in report["evicted_share"].items():
    for i in range(2):
      assert report["evicted_share"]["oracle"]["all"][i] <= row["all"][i] + 1e-9
  assert all(0 < x <= 1 for x in report["concentration"])
  assert set(report["top_kinds"]) == {"first_64", "last_64"}
  v = report["cost_variance"]
  assert len(v["between"]) == 2 and all(0 <= x <= 1 for x in v["between_share"])
  paths = diagnostics_job.write(report, tmp_path / "out")
  assert json.loads(paths[0].read_text())["num_traces"] == 6
  md = paths[1].read_text()
  assert "## Concentration" in md and "between share" in md
  with pytest.raises(ValueError, match="no 'test' traces"):
    diagnostics_job.run(config, tmp_path, split="test", progress=False)
