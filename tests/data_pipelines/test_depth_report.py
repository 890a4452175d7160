"""The needle-depth report: distances, buckets, torn result files."""

import json
import re

import pytest

from data_pipelines import depth_report
from kvp_jax.samples import ruler
from kvp_jax import samples as samples_lib


class WordTokenizer:
  """One token per word, digit or punctuation mark."""

  def encode(self, text, add_bos=False):
    return [2] * add_bos + [0] * len(re.findall(r"\d|[A-Za-z]+|\S", text))


def test_needle_distance_counts_tokens_after_the_needle():
  tok = WordTokenizer()
  sample = ruler.generate_sample("niah_single_1", 0, 1024, tok, seed=1)
  text = samples_lib.prompt_text(sample)
  tail = text[text.index(sample.answers[0]):]
  assert depth_report.needle_distance(sample, tok) == len(tok.encode(tail))
  # Deeper needles are farther from the question.
  samples = [ruler.generate_sample("niah_single_1", i, 1024, tok, seed=1)
             for i in range(8)]
  by_depth = sorted(samples, key=lambda s: s.metadata["depths"][0])
  distances = [depth_report.needle_distance(s, tok) for s in by_depth]
  assert distances == sorted(distances, reverse=True)
  missing = samples_lib.Sample(id="x", task="t", context="no value here",
                               question="q?", answer_prefix=" a",
                               answers=["1234567"], max_new_tokens=4)
  with pytest.raises(ValueError, match="no answer occurs"):
    depth_report.needle_distance(missing, tok)


def test_accuracy_by_buckets_against_a_direct_count():
  records = [dict(depth=d, distance=0, score=s) for d, s in
             [(0, 0.0), (3, 1.0), (9, 0.0), (10, 1.0), (55, 1.0), (59, 1.0)]]
  assert depth_report.accuracy_by(records, "depth", 10) == [
      (0, 100 / 3, 3), (10, 100.0, 1), (50, 100.0, 2)]
  text = depth_report.markdown(records, "t")
  assert "| 0-9 | 33 | 3 |" in text and "Mean score 66.7 over 6" in text


def test_torn_last_line_is_dropped_and_a_bad_middle_line_refused(tmp_path):
  path = tmp_path / "r.jsonl"
  good = [{"id": "a-1", "score": 1.0}, {"id": "a-2", "score": 0.0}]
  path.write_text("".join(json.dumps(r) + "\n" for r in good) + '{"id": "a-')
  assert depth_report.read_records(path) == good
  assert path.read_text().count("\n") == 2       # Rewritten without it.
  path.write_text('{"id"\n' + json.dumps(good[0]) + "\n")
  with pytest.raises(ValueError, match=r"r.jsonl:1: not a JSON record"):
    depth_report.read_records(path)
