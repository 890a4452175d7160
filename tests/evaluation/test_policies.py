"""Several policies in one evaluation grid (eval.policies): checked
config, shared baseline cells, per-policy verdicts, one protected set."""

import json
from pathlib import Path

import jax
import pytest

from experiments import common
from kvp_jax import cache as cache_lib
from kvp_jax import evaluation
from kvp_jax import model as model_lib
from kvp_jax import policy as policy_lib
from kvp_jax import samples as samples_lib


@pytest.fixture(scope="module")
def model():
  return model_lib.load_model({"name": "tiny_gemma_vocab", "source": "random"})


def _policy(path, model, seed=0, protected=cache_lib.Protected()):
  c = model.config
  config = policy_lib.AgentConfig(hidden=16, feature_width=16, position_dim=4,
                                  max_position=256, dtype="float32")
  return str(policy_lib.save_artifact(path, policy_lib.PolicyArtifact(
      agent_config=config, params=policy_lib.init_agents(
          config, c.num_agents, c.head_dim, jax.random.key(seed)),
      model_name=c.name, model_fingerprint=model.fingerprint,
      num_layers=c.num_layers, num_kv_heads=c.num_kv_heads,
      head_dim=c.head_dim, layer_start=0, layer_stop=c.num_layers, info={},
      protected=protected)))


def _config(tmp_path, policy, policies):
  samples = [samples_lib.Sample(
      id=f"q{i}", task="toy",
      context=" ".join(["red blue green lamp"] * 25) + f" The code is {i}7.",
      question="What is the code?", answer_prefix=" The code is",
      answers=[f"{i}7"], max_new_tokens=4, metadata={"target_length": 256})
             for i in range(3)]
  samples_lib.write_samples(tmp_path / "toy.jsonl", samples)
  c = common.base_config()
  c.model = common.model_config("tiny_gemma_vocab", source="random")
  c.eval = common.eval_config(
      suites=[{"kind": "ruler", "name": "toy", "sources": [
          {"kind": "jsonl", "paths": [str(tmp_path / "toy.jsonl")]}]}],
      scorers=["kvp", "knorm"], budgets=[40], batch_size=3, policy=policy,
      output_dir=str(tmp_path / "eval"))
  c.eval.policies = policies
  return c


def _rows(tmp_path):
  return [json.loads(l) for l in
          (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]


def test_config_checks_names_and_paths():
  ec = evaluation.EvalConfig(scorers=("kvp", "knorm"),
                             policies={"kvp_b": "b.kvp", "kvp_c2": "c.kvp"})
  source = evaluation.PolicySource
  assert ec.policies == (("kvp_b", source("b.kvp")),
                         ("kvp_c2", source("c.kvp")))
  assert ec.all_scorers == ("kvp", "knorm", "kvp_b", "kvp_c2")
  assert ec.policy_sources("w/policy.kvp") == {
      "kvp": source("w/policy.kvp"), "kvp_b": source("b.kvp"),
      "kvp_c2": source("c.kvp")}
  assert evaluation.EvalConfig(scorers=("knorm",), policies={
      "kvp_b": "b.kvp"}).policy_sources("x") == {"kvp_b": source("b.kvp")}
  pinned = {"path": "p.kvp", "sha256": "ab" * 32, "commit": "abc123"}
  assert evaluation.EvalConfig(scorers=("knorm",), policies={
      "kvp_p": pinned}).policies == (("kvp_p", source(**pinned)),)
  for policies, message in (({"contrast": "a"}, "'contrast' is not a policy"),
                            ({"kvp_": "a"}, "'kvp_' is not a policy"),
                            ({"kvp_knorm": ""}, "expected the path"),
                            ({"kvp_p": {"path": "a", "sha256": "x"}},
                             "is not a sha256"),
                            ({"kvp_p": {"path": "a", "hash": "x"}},
                             r"unknown fields \['hash'\]"),
                            (["kvp_b=a"], "expected a mapping")):
    with pytest.raises(ValueError, match=message):
      evaluation.EvalConfig(scorers=("knorm",), policies=policies)
  with pytest.raises(ValueError, match="goes in config.eval.policies"):
    evaluation.EvalConfig(scorers=("knorm", "kvp_b"))


def test_extra_policy_shares_baselines_and_gets_verdicts(tmp_path, model):
  policy = _policy(tmp_path / "a.kvp", model)
  # One policy first: the baseline cells are logged once.
  evaluation.evaluate(_config(tmp_path, policy, {}), tmp_path, model=model,
                      progress=False)
  before = _rows(tmp_path)
  # The same artifact as an extra policy, and another one: only their cells
  # run; the first gives exactly kvp's values (same artifact, same cells).
  other = _policy(tmp_path / "b.kvp", model, seed=1)
  evaluation.evaluate(_config(tmp_path, policy, {"kvp_same": policy,
                                                 "kvp_other": other}),
                      tmp_path, model=model, progress=False)
  after = _rows(tmp_path)
  assert after[:len(before)] == before
  new = after[len(before):]
  assert {r["scorer"] for r in new} == {"kvp_same", "kvp_other"}
  value = lambda rows, s: {(r["sample"], r["metric"]): r["value"]
                           for r in rows if r["scorer"] == s}
  assert value(new, "kvp_same") == value(before, "kvp")
  assert len(value(new, "kvp_other")) == len(value(before, "kvp"))
  verdicts = [json.loads(l) for l in (tmp_path / "eval" / "verdicts.jsonl")
              .read_text().splitlines()]
  paired = [v for v in verdicts if v["kind"] == "paired"]
  for method in ("kvp", "kvp_same", "kvp_other"):
    assert {v["family"] for v in paired if v["method"] == method} >= {
        "query_free"}, method
  same = [v for v in paired if v["method"] == "kvp_same" and
          v["family"] == "kvp"]
  assert same and all(v["difference"] == 0 and v["verdict"] ==
                      "not distinguishable" for v in same)
  # "kvp" is never compared against the extra policies as a baseline.
  assert not any(v["baseline"].startswith("kvp_") for v in paired)
  md = (tmp_path / "eval" / "results.md").read_text()
  assert "| kvp_other |" in md


def test_policies_must_protect_the_same_tokens(tmp_path, model):
  policy = _policy(tmp_path / "a.kvp", model)
  odd = _policy(tmp_path / "odd.kvp", model,
                protected=cache_lib.Protected(num_sinks=2, num_recent=8))
  with pytest.raises(ValueError, match="protect different tokens"):
    evaluation.evaluate(_config(tmp_path, policy, {"kvp_odd": odd}),
                        tmp_path, model=model, progress=False)
  with pytest.raises(policy_lib.ArtifactError, match="not found"):
    from kvp_jax import _cli  # pylint: disable=g-import-not-at-top
    _cli.check_eval_config(_config(tmp_path, policy, {
        "kvp_gone": str(tmp_path / "gone.kvp")}), tmp_path)


def test_pinned_policy_reports_without_its_file(tmp_path, model):
  """A policy pinned by sha256 needs no file for a report; to compute, its
  absence is an error naming the git command that restores it, and a file
  with another hash is refused."""
  from kvp_jax import _cli  # pylint: disable=g-import-not-at-top
  import hashlib  # pylint: disable=g-import-not-at-top
  policy = _policy(tmp_path / "a.kvp", model)
  other = _policy(tmp_path / "b.kvp", model, seed=1)
  digest = hashlib.sha256(Path(other).read_bytes()).hexdigest()
  pin = {"path": str(other), "sha256": digest, "commit": "c0ffee"}
  config = _config(tmp_path, policy, {"kvp_other": pin})
  evaluation.evaluate(config, tmp_path, model=model, progress=False)
  computed = (tmp_path / "eval" / "results.jsonl").read_text()
  Path(other).rename(tmp_path / "elsewhere.kvp")
  with pytest.raises(policy_lib.ArtifactError,
                     match=f"git show c0ffee:{other} > {other}"):
    _cli.check_eval_config(config, tmp_path)
  policies = _cli.check_eval_config(config, tmp_path, load=False)
  assert policies["kvp_other"].sha256 == digest
  assert policies["kvp_other"].artifact is None
  evaluation.evaluate(config, tmp_path, model=model, policies=policies,
                      progress=False, compute=False)
  assert (tmp_path / "eval" / "results.jsonl").read_text() == computed
  Path(other).write_bytes(Path(policy).read_bytes())   # Another policy.
  with pytest.raises(policy_lib.ArtifactError, match="the config pins"):
    _cli.check_eval_config(config, tmp_path, load=False)
