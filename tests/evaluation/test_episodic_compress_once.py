"""Compress-once plain baselines in an episodic suite: the conversation
prefilled whole and evicted once, logged under protocol "once" beside the
block-by-block cells, and EpiCache compared with each of them."""

import json

import pytest

from experiments import common
from kvp_jax import evaluation
from kvp_jax import eviction as eviction_lib
from kvp_jax import model as model_lib
from kvp_jax import scorers as scorers_lib
from kvp_jax.evaluation import _paired
from tests.evaluation import test_episodic_suite as episodic_tests


@pytest.fixture(scope="module")
def model():
  return model_lib.load_model({"name": "tiny_gemma_vocab", "source": "random"})


def _config(tmp_path, model, **suite):
  c = common.base_config()
  c.model = common.model_config("tiny_gemma_vocab", source="random")
  settings = dict(episodic_tests._suite(tmp_path), layer_profile="",
                  **suite)
  c.eval = common.eval_config(
      suites=[settings], scorers=["kvp", "keydiff"], budgets=[48],
      protocol="chunked", chunk_size=64, batch_size=8,
      policy=str(episodic_tests._policy(tmp_path, model)))
  return c


def test_compress_once_cells_are_the_once_protocol(model, tmp_path):
  c = _config(tmp_path, model, plain_protocols=["chunked", "once"])
  rows = evaluation.evaluate(c, tmp_path, model=model, progress=False)
  cells = {(r["scorer"], r["protocol"]) for r in rows
           if r["metric"] == "accuracy" and r["group"] == "mean"}
  assert cells == {("full", "full"), ("kvp", "chunked"), ("kvp", "once"),
                   ("keydiff", "chunked"), ("keydiff", "once"),
                   ("epicache", "chunked"), ("epicache+kvp", "chunked")}
  log = evaluation.SampleLog(tmp_path / "eval" / "samples.jsonl")
  once = {r["sample"]: r for r in log.rows
          if r["scorer"] == "keydiff" and r["protocol"] == "once"}
  # Each equals answer_compressed with protocol "once" on the same samples.
  samples = [i.sample for i in evaluation.build_suite(
      dict(c.eval.suites[0]), model.tokenizer)]
  direct = eviction_lib.answer_compressed(
      model, scorers_lib.get_scorer("keydiff"),
      eviction_lib.Eviction(48, protocol="once"), samples)
  assert [once[s.id]["prediction"] for s in samples] == [
      r["prediction"] for r in direct]
  # The whole conversation is prefilled: its peak exceeds the budget plus
  # a block, which bounds the block-by-block cells.
  chunked = [r for r in log.rows
             if r["scorer"] == "keydiff" and r["protocol"] == "chunked"]
  assert min(r["peak_slots"] for r in once.values()) > 48 + 64
  assert max(r["peak_slots"] for r in chunked) <= 48 + 64
  verdicts = [json.loads(l) for l in (tmp_path / "eval" / "verdicts.jsonl")
              .read_text().splitlines()]
  verdicts = [v for v in verdicts if v.get("kind") == "paired"]
  against = {(v["method"], v["family"], v["baseline"], v["protocol"])
             for v in verdicts if v["family"].startswith("compress_once")}
  assert against == {(m, f"compress_once/{b}", b, "once")
                     for m in ("epicache", "epicache+kvp")
                     for b in ("kvp", "keydiff")}


def test_against_compress_once_pairs_across_protocols():
  rows = [dict(suite="s", sample=f"q{i}", scorer=scorer, budget=8,
               metric="accuracy", protocol=protocol, allocation="uniform",
               value=value, cluster=f"c{i // 2}")
          for i in range(4)
          for scorer, protocol, value in (
              ("epicache", "chunked", 100.0 * (i < 3)),
              ("kvp", "once", 100.0 * (i < 1)),
              ("kvp", "chunked", 0.0))]
  out = _paired.against_compress_once(rows, num_resamples=2000, seed=0)
  assert [(c["method"], c["baseline"], c["protocol"]) for c in out] == [
      ("epicache", "kvp", "once")]
  assert out[0]["difference"] == pytest.approx(50.0)
  assert out[0]["num_clusters"] == 2
  assert _paired.against_compress_once(
      [r for r in rows if r["protocol"] != "once"]) == []


def test_an_unknown_plain_protocol_is_refused(model, tmp_path):
  c = _config(tmp_path, model, plain_protocols=["decode"])
  with pytest.raises(ValueError, match="plain_protocols: .*decode"):
    evaluation.evaluate(c, tmp_path, model=model, progress=False)
