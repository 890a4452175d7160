"""The long_text suite kind (one module, registered like every kind):
budgets as ratios of each context, read with chunked prefill."""

import numpy as np
import pytest

from experiments import common
from kvp_jax import evaluation
from kvp_jax import model as model_lib
from kvp_jax.evaluation import _long_text_suite


@pytest.fixture(scope="module")
def model():
  return model_lib.load_model({"name": "tiny_gemma_vocab", "source": "random"})


def test_ratio_labels():
  assert _long_text_suite.ratio_label(0.125) == "1/8"
  assert _long_text_suite.ratio_label(0.25) == "1/4"
  assert "long_text" in evaluation.suite_kinds()


def test_ratio_cells_scale_with_the_context(tmp_path, model):
  rng = np.random.default_rng(0)
  words = "red blue green seven apple river stone lamp".split()
  docs = tmp_path / "docs"
  docs.mkdir()
  for i in range(6):
    (docs / f"d{i}.txt").write_text(
        "\n".join(" ".join(rng.choice(words, 12)) for _ in range(40)))
  c = common.base_config()
  c.model = common.model_config("tiny_gemma_vocab", source="random")
  c.eval = common.eval_config(
      suites=[{"kind": "long_text", "name": "long", "ratios": [0.5],
               "sources": [{"kind": "documents", "source": str(docs),
                            "lengths": [192, 384], "num_samples": 2,
                            "seed": 3}]}],
      scorers=["knorm"], budgets=[40], batch_size=4, protocol="chunked",
      chunk_size=32, metrics=["perplexity", "fidelity"])
  rows = evaluation.evaluate(c, tmp_path / "run", model=model,
                             progress=False)
  log = evaluation.SampleLog(tmp_path / "run" / "eval" / "samples.jsonl")
  ratio = [r for r in log.rows if r["budget"] == "1/2" and
           r["metric"] == "perplexity"]
  fixed = [r for r in log.rows if r["budget"] == 40 and
           r["metric"] == "perplexity"]
  assert len(ratio) == len(fixed) == 4
  by_group = lambda rs: {r["group"]: r["cache_bytes"] for r in rs}
  ratio, fixed = by_group(ratio), by_group(fixed)
  short, long = sorted(ratio)
  # Both caches also hold the appended continuation; beyond it, half
  # the context (about 72 and 144 tokens) holds more than the fixed 40
  # tokens, and more so for the longer context.
  assert 0 < ratio[short] - fixed[short] < ratio[long] - fixed[long]
  means = {(r["budget"], r["metric"]) for r in rows if r["group"] == "mean"}
  assert {("1/2", "perplexity"), ("1/2", "agreement"), ("40", "kl"),
          ("full", "perplexity")} <= means
