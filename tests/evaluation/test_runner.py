"""The evaluation grid on a tiny model: every suite kind, tables, plots,
resuming, and errors."""

import json

import jax
import numpy as np
import pytest

from kvp_jax import samples as samples_lib
from experiments import common
from kvp_jax import evaluation
from kvp_jax import model as model_lib
from kvp_jax import policy as policy_lib


@pytest.fixture(scope="module")
def model():
  return model_lib.load_model({"name": "tiny_gemma_vocab", "source": "random"})


def _policy(tmp_path, model):
  c = model.config
  config = policy_lib.AgentConfig(hidden=16, feature_width=16, position_dim=4,
                                  max_position=256, dtype="float32")
  return policy_lib.save_artifact(tmp_path / "p.kvp", policy_lib.PolicyArtifact(
      agent_config=config, params=policy_lib.init_agents(
          config, c.num_agents, c.head_dim, jax.random.key(0)),
      model_name=c.name, model_fingerprint=model.fingerprint,
      num_layers=c.num_layers, num_kv_heads=c.num_kv_heads,
      head_dim=c.head_dim, layer_start=0, layer_stop=c.num_layers, info={}))


def _config(tmp_path, model):
  rng = np.random.default_rng(0)
  words = "red blue green seven apple river stone lamp".split()
  samples = []
  for i in range(3):
    value = str(1000000 + i)
    hay = " ".join(rng.choice(words, 60))
    samples.append(samples_lib.Sample(
        id=f"q{i}", task="toy", context=f"{hay} The code is {value}. {hay}",
        question="What is the code?", answer_prefix=" The code is",
        answers=[value], max_new_tokens=6, metadata={"target_length": 256}))
  samples_lib.write_samples(tmp_path / "toy.jsonl", samples)
  text = tmp_path / "doc.txt"
  text.write_text(" ".join(rng.choice(words, 400)))
  c = common.base_config()
  c.model = common.model_config("tiny_gemma_vocab", source="random")
  c.eval = common.eval_config(
      suites=[
          {"kind": "ruler", "name": "toy",
           "sources": [{"kind": "jsonl", "paths": [str(tmp_path / "toy.jsonl")]}]},
          {"kind": "perplexity", "name": "doc", "text_files": [str(text)],
           "context_tokens": 120, "continuation_tokens": 30},
          {"kind": "attention_cost", "name": "cost", "max_new_tokens": 5,
           "sources": [{"kind": "jsonl", "paths": [str(tmp_path / "toy.jsonl")]}]},
      ],
      scorers=["kvp", "knorm", "snapkv", "oracle"], budgets=[24, 48],
      batch_size=2, policy=str(_policy(tmp_path, model)))
  return c


def test_grid_writes_tables_and_plots(tmp_path, model):
  config = _config(tmp_path, model)
  rows = evaluation.evaluate(config, tmp_path / "run", model=model,
                             progress=False)
  out = tmp_path / "run" / "eval"
  assert (out / "toy.png").is_file() and (out / "doc.png").is_file()
  md = (out / "results.md").read_text()
  assert "## toy: accuracy" in md and "## doc: perplexity" in md
  assert "## cost: normalised_cost" in md
  primary = ("accuracy", "perplexity", "normalised_cost")
  cell = lambda s, sc, b, m=primary: [
      r for r in rows if r["suite"] == s and r["scorer"] == sc and
      r["budget"] == b and r["group"] == "mean" and r["metric"] in m]
  for suite in ("toy", "doc"):
    assert len(cell(suite, "full", "full")) == 1
    for scorer in ("kvp", "knorm", "snapkv", "oracle"):
      for b in ("24", "48"):
        assert len(cell(suite, scorer, b)) == 1, (suite, scorer, b)
  # The oracle ranks by the true importance: its normalised cost is 1.
  oracle = cell("cost", "oracle", "all")[0]
  np.testing.assert_allclose(oracle["value"], 1.0, atol=1e-5)
  knorm = cell("cost", "knorm", "all")[0]
  assert knorm["value"] > 1.0
  assert len(knorm["per_head"]) == model.config.num_layers
  # Perplexity of the full cache equals the plain model's.
  full = cell("doc", "full", "full")[0]["value"]
  big = cell("doc", "knorm", "48")[0]["value"]
  assert full > 1 and abs(big - full) / full < 0.5
  _check_new_metrics(rows, out, md, cell)


def _check_new_metrics(rows, out, md, cell):
  """Fidelity, evicted share and verdicts of the default metrics."""
  for suite in ("toy", "doc"):
    for scorer in ("kvp", "knorm", "snapkv", "oracle"):
      for b in ("24", "48"):
        (agree,) = cell(suite, scorer, b, ("agreement",))
        (kl,) = cell(suite, scorer, b, ("kl",))
        (ll,) = cell(suite, scorer, b, ("fidelity_ll",))
        assert 0 <= agree["value"] <= 100 and kl["value"] >= 0
        assert ll["value"] < 0
    assert not cell(suite, "full", "full", ("agreement",))
  # A larger budget is at least as faithful on average (oracle ranks).
  assert (cell("doc", "oracle", "48", ("kl",))[0]["value"] <=
          cell("doc", "oracle", "24", ("kl",))[0]["value"] + 1e-6)
  shares = [r for r in rows if r["suite"] == "cost" and
            r["metric"] == "evicted_share" and r["group"] == "mean"]
  assert {r["budget"] for r in shares} == {"64", "128", "256", "512"}
  oracle = {r["budget"]: r["value"] for r in shares if r["scorer"] == "oracle"}
  knorm = {r["budget"]: r["value"] for r in shares if r["scorer"] == "knorm"}
  assert oracle["64"] <= knorm["64"]
  verdicts = [json.loads(l) for l in
              (out / "verdicts.jsonl").read_text().splitlines()]
  paired = [v for v in verdicts if v["kind"] == "paired"]
  assert {v["metric"] for v in paired} >= {"accuracy", "agreement", "kl",
                                           "perplexity", "fidelity_ll"}
  assert all(v["family"] in ("query_free", "query_aware") for v in paired)
  # Today's tables come first, the new sections after them.
  assert md.index("## cost: normalised_cost") < md.index(
      "KVP against the best baseline of each family")
  assert (out / "doc_kl_paired.png").is_file()


def test_rerun_resumes(tmp_path, model):
  config = _config(tmp_path, model)
  evaluation.evaluate(config, tmp_path / "run", model=model, progress=False)
  log = tmp_path / "run" / "eval" / "samples.jsonl"
  lines = log.read_text().splitlines()
  # Drop the last results and tear a line, as a kill would.
  log.write_text("\n".join(lines[:-5]) + "\n" + lines[-5][:20])
  evaluation.evaluate(config, tmp_path / "run", model=model, progress=False)
  again = [json.loads(l) for l in log.read_text().splitlines()
           if l.startswith("{") and l.endswith("}")]
  keys = [(r["suite"], r["sample"], r["scorer"], str(r["budget"]),
           r["metric"]) for r in again]
  assert len(keys) == len(set(keys)) == len(lines)


def test_report_only_reads_the_log_and_computes_nothing(tmp_path, model):
  config = _config(tmp_path, model)
  evaluation.evaluate(config, tmp_path / "run", model=model, progress=False)
  out = tmp_path / "run" / "eval"
  log = out / "samples.jsonl"
  lines = log.read_text().splitlines()
  rows = [json.loads(l) for l in lines]
  # Keep the toy suite's rows of sample q0 only (a grid stopped part-way).
  kept = [l for l, r in zip(lines, rows)
          if r["suite"] != "toy" or r["sample"] == "q0"]
  assert len(kept) < len(lines)
  log.write_text("".join(l + "\n" for l in kept))
  partial = evaluation.evaluate(config, tmp_path / "run", model=model,
                                progress=False, compute=False)
  assert log.read_text().splitlines() == kept       # Nothing ran.
  toy = [r for r in partial if r["suite"] == "toy" and r["group"] == "mean"]
  assert toy and all(r["num_samples"] == 1 for r in toy)
  q0 = {(r["scorer"], str(r["budget"]), r["metric"]): r["value"]
        for r in rows if r["suite"] == "toy" and r["sample"] == "q0"}
  for r in toy:
    assert r["value"] == pytest.approx(q0[(r["scorer"], r["budget"],
                                           r["metric"])])
  assert "report of the samples logged so far" in (
      out / "results.md").read_text()


def test_errors(tmp_path, model):
  config = _config(tmp_path, model)
  config.eval.budgets = [8]
  with pytest.raises(ValueError, match="below the minimum"):
    evaluation.evaluate(config, tmp_path / "a", model=model, progress=False)
  config = _config(tmp_path, model)
  config.eval.scorers = ["knorm", "nope"]
  with pytest.raises(ValueError, match="unknown scorer 'nope'"):
    evaluation.evaluate(config, tmp_path / "b", model=model, progress=False)
  config = _config(tmp_path, model)
  other = model_lib.load_model({"name": "tiny_gemma_vocab", "source": "random",
                                "seed": 3})
  with pytest.raises(policy_lib.ArtifactError, match="fingerprint"):
    evaluation.evaluate(config, tmp_path / "c", model=other, progress=False)


def test_kvp_verdicts_name_wins_and_losses():
  from kvp_jax.evaluation import _report
  rows = []
  for scorer, acc, ppl in (("kvp", 80.0, 12.0), ("knorm", 60.0, 11.0),
                           ("oracle", 100.0, 9.0), ("full", 90.0, 10.0)):
    budget = "full" if scorer == "full" else "64"
    rows += [dict(suite="ruler", group="mean", scorer=scorer, budget=budget,
                  metric="accuracy", value=acc, num_samples=2),
             dict(suite="dialogues", group="mean", scorer=scorer,
                  budget=budget, metric="perplexity", value=ppl,
                  num_samples=2)]
  lines = _report.kvp_verdicts(rows)
  assert "| ruler | 64 | 80.000 | 60.000 (knorm) | KVP's higher |" in lines
  assert "| dialogues | 64 | 12.000 | 11.000 (knorm) | KVP's higher |" in lines
  assert "KVP's mean against the best baseline's" in _report.markdown(rows)
  assert _report.kvp_verdicts([r for r in rows if r["scorer"] != "kvp"]) == []


@pytest.mark.parametrize("protocol,allocation", [("chunked", "uniform"),
                                                 ("decode", "uniform"),
                                                 ("once", "model")])
def test_grid_runs_every_protocol(tmp_path, model, protocol, allocation):
  config = _config(tmp_path, model)
  config.eval.suites = config.eval.suites[:2]
  config.eval.update(scorers=["kvp", "knorm"], budgets=[24], chunk_size=64,
                     decode_interval=4, protocol=protocol,
                     allocation=allocation,
                     metrics=list(common.PRIMARY_METRICS))
  rows = evaluation.evaluate(config, tmp_path / "run", model=model,
                             progress=False)
  got = {(r["suite"], r["scorer"]) for r in rows
         if r["group"] == "mean" and r["budget"] == "24"
         and r["protocol"] == protocol and r["allocation"] == allocation}
  assert got == {(s, sc) for s in ("toy", "doc") for sc in ("kvp", "knorm")}
  # Today's metrics only: nothing new in the log nor in results.jsonl.
  out = tmp_path / "run" / "eval"
  logged = {json.loads(l)["metric"] for l in
            (out / "samples.jsonl").read_text().splitlines()}
  assert logged == {"accuracy", "perplexity"}
  assert {r["metric"] for r in rows} == {"accuracy", "perplexity"}


@pytest.mark.parametrize("protocol", ["chunked", "decode"])
def test_fidelity_with_eviction_while_reading(tmp_path, model, protocol):
  config = _config(tmp_path, model)
  config.eval.suites = config.eval.suites[:2]
  config.eval.update(scorers=["knorm"], budgets=[24], chunk_size=64,
                     decode_interval=4, protocol=protocol)
  rows = evaluation.evaluate(config, tmp_path / "run", model=model,
                             progress=False)
  got = {(r["suite"], r["metric"]) for r in rows if r["budget"] == "24"}
  assert got >= {(s, m) for s in ("toy", "doc")
                 for m in ("agreement", "kl", "fidelity_ll")}


@pytest.mark.parametrize("protocol", ["once", "chunked", "decode"])
def test_perplexity_from_the_fidelity_pass(tmp_path, model, protocol):
  """With fidelity on, a perplexity suite's compressed cells take their
  perplexity from the fidelity pass; it equals the separate log-likelihood
  pass of a grid without fidelity, per sample."""
  config = _config(tmp_path, model)
  config.eval.suites = config.eval.suites[1:2]
  other = tmp_path / "doc2.txt"        # Two samples, of unequal lengths.
  other.write_text(" ".join(np.random.default_rng(1).choice(
      "red blue green seven apple river stone lamp".split(), 300)))
  config.eval.suites[0]["text_files"] = [
      config.eval.suites[0]["text_files"][0], str(other)]
  config.eval.suites[0]["continuation_tokens"] = 40
  # SnapKV reads the prompt's queries: it cannot evict while decoding.
  scorers = ["knorm", "snapkv" if protocol != "decode" else "h2o", "random"]
  # 200 > context + continuation (150 + 40 tokens): nothing is evicted.
  # The continuation is read in 3 pieces (decode: evicted between them).
  config.eval.update(scorers=scorers, budgets=[24, 200],
                     chunk_size=64, decode_interval=16, protocol=protocol)
  evaluation.evaluate(config, tmp_path / "one", model=model, progress=False)
  config.eval.metrics = list(common.PRIMARY_METRICS)
  evaluation.evaluate(config, tmp_path / "two", model=model, progress=False)

  def perplexity_rows(run):
    rows = [json.loads(l) for l in
            (tmp_path / run / "eval" / "samples.jsonl").read_text().splitlines()]
    return {(r["sample"], r["scorer"], str(r["budget"])): r for r in rows
            if r["metric"] == "perplexity"}, rows

  one, one_rows = perplexity_rows("one")
  two, _ = perplexity_rows("two")
  assert set(one) == set(two) and len(one) == 2 * (1 + 3 * 2)
  for key, row in one.items():
    assert row["tokens"] == two[key]["tokens"]
    np.testing.assert_allclose(row["nll"], two[key]["nll"], rtol=2e-5,
                               err_msg=str(key))
    np.testing.assert_allclose(row["value"], two[key]["value"], rtol=2e-5)
    # The cache also holds the continuation, padded to 16 tokens in the
    # fidelity pass and to 64 in the log-likelihood pass.
    assert 0 < row["cache_bytes"] <= two[key]["cache_bytes"]
  # ...and is exp(-fidelity_ll) of the same cell.
  ll = {(r["sample"], r["scorer"], str(r["budget"])): r["value"]
        for r in one_rows if r["metric"] == "fidelity_ll"}
  assert len(ll) == 2 * 3 * 2
  for key, value in ll.items():
    np.testing.assert_allclose(one[key]["value"], np.exp(-value), rtol=1e-5)
  # Agreement is with the full cache's own prediction at each position, not
  # with the reference text (which the random model rarely predicts): a
  # cache that keeps everything agrees everywhere.
  agreement = {(r["sample"], r["scorer"], str(r["budget"])): r["value"]
               for r in one_rows if r["metric"] == "agreement"}
  assert len(agreement) == 2 * 3 * 2
  for (_, scorer, budget), value in agreement.items():
    if budget == "200":
      assert value == 100.0, (scorer, value)
  assert min(agreement.values()) < 100.0
