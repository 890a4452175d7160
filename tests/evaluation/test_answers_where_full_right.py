"""The ruler suite's answers="where_full_right": compressed cells answer
only the samples the full cache answers right, and every number that reads
them (answer retention) or does not (fidelity) equals the "all" grid's."""

import dataclasses
import json

import pytest

from kvp_jax import evaluation
from kvp_jax import eviction as eviction_lib
from kvp_jax import model as model_lib
from kvp_jax import samples as samples_lib
from kvp_jax.evaluation import _verdicts
from tests.evaluation import test_runner


@pytest.fixture(scope="module")
def model():
  return model_lib.load_model({"name": "tiny_gemma_vocab", "source": "random"})


def _rows(path):
  return [json.loads(l) for l in path.read_text().splitlines()]


def _grid(tmp_path, model, answers):
  c = test_runner._config(tmp_path, model)
  suite = dict(c.eval.suites[0])
  suite.update(answers=answers, sources=[
      {"kind": "jsonl", "paths": [str(tmp_path / "right.jsonl")]}])
  c.eval.suites = [suite]
  c.eval.batch_size = 1        # The same batches in both grids.
  return c


def test_compressed_cells_answer_only_where_the_full_cache_is_right(
    tmp_path, model, monkeypatch):
  # The random model's own full-cache answers become the references of two
  # samples of three, so that the full cache answers exactly those right.
  first = test_runner._config(tmp_path, model)
  first.eval.scorers = []
  evaluation.evaluate(first, tmp_path / "first", model=model, progress=False)
  said = {r["sample"]: r["prediction"].strip()[:8]
          for r in _rows(tmp_path / "first" / "eval" / "samples.jsonl")
          if r["metric"] == "accuracy"}
  samples = samples_lib.read_samples(tmp_path / "toy.jsonl")
  samples = [dataclasses.replace(s, answers=[said[s.id]])
             if s.id != "q1" else s for s in samples]
  samples_lib.write_samples(tmp_path / "right.jsonl", samples)

  logs = {}
  for answers in ("all", "where_full_right"):
    evaluation.evaluate(_grid(tmp_path, model, answers), tmp_path / answers,
                        model=model, progress=False)
    logs[answers] = _rows(tmp_path / answers / "eval" / "samples.jsonl")
  every, only = logs["all"], logs["where_full_right"]
  full = {r["sample"]: r["value"] for r in every
          if r["scorer"] == "full" and r["metric"] == "accuracy"}
  assert full == {"q0": 100.0, "q1": 0.0, "q2": 100.0}

  key = lambda r: (r["sample"], r["scorer"], r["budget"], r["metric"])
  compressed = lambda rows: {key(r): r["value"] for r in rows
                             if r["metric"] == "accuracy"
                             and r["scorer"] != "full"}
  assert {k[0] for k in compressed(only)} == {"q0", "q2"}
  assert compressed(only) == {k: v for k, v in compressed(every).items()
                              if k[0] != "q1"}
  assert len(compressed(every)) == 3 * len(compressed(only)) / 2
  retention = lambda rows: sorted(
      (key(r), r["value"]) for r in _verdicts.retention_rows(rows))
  assert retention(only) == retention(every)
  fidelity = lambda rows: {key(r): r["value"] for r in rows
                           if r["metric"] in ("agreement", "kl")}
  assert fidelity(only) == fidelity(every)
  assert {k[0] for k in fidelity(only)} == {"q0", "q1", "q2"}

  # A rerun reads which samples are right from the log: it generates
  # nothing and logs nothing.
  calls = []
  generate = eviction_lib.generate_compressed
  monkeypatch.setattr(eviction_lib, "generate_compressed",
                      lambda *a, **k: calls.append(1) or generate(*a, **k))
  log = tmp_path / "where_full_right" / "eval" / "samples.jsonl"
  before = log.read_text()
  evaluation.evaluate(_grid(tmp_path, model, "where_full_right"),
                      tmp_path / "where_full_right", model=model,
                      progress=False)
  assert log.read_text() == before and not calls


def test_an_unknown_answers_setting_is_refused(tmp_path, model):
  c = test_runner._config(tmp_path, model)
  suite = dict(c.eval.suites[0], answers="some")
  c.eval.suites = [suite]
  with pytest.raises(ValueError, match="answers: 'some' is not one of"):
    evaluation.evaluate(c, tmp_path / "run", model=model, progress=False)
