"""The sample record: prompt format, JSONL round trip and validation, and the
length search every generator relies on."""

import json
import os
import random
import re

import pytest

from kvp_jax import samples as samples_lib
from kvp_jax.samples.schema import Sample, SampleError


class WordTokenizer:
  """Cheap stand-in: one token per word, digit or punctuation mark."""

  def encode(self, text, add_bos=False):
    return [2] * add_bos + [0] * len(re.findall(r"\d|[A-Za-z]+|\S", text))


def _sample(**overrides):
  fields = dict(id="s-0", task="niah_single_1", context="Some context.",
                question="What is it?", answer_prefix=" It is",
                answers=["42"], max_new_tokens=8)
  fields.update(overrides)
  return Sample(**fields)


def _record(**overrides):
  return dict(_sample().to_dict(), **overrides)


def test_prompt_text_joins_context_question_and_prefix():
  assert samples_lib.prompt_text(_sample()) == (
      "Some context.\nWhat is it? It is")
  assert samples_lib.prompt_text(_sample(question="")) == "Some context. It is"
  assert samples_lib.prompt_text(_sample(context="")) == "What is it? It is"
  continuation = _sample(question="", answer_prefix="", answers=[],
                         context="A: hi\n", continuation="B: hello")
  assert samples_lib.prompt_text(continuation) == "A: hi\n"


def test_reference_continuation_prefers_the_text_then_the_answers():
  base = dict(id="a", task="t", context="c", question="q",
              answer_prefix=" The numbers are", max_new_tokens=8)
  assert samples_lib.reference_continuation(
      Sample(answers=["12", "34"], **base)) == " 12, 34."
  assert samples_lib.reference_continuation(
      Sample(answers=["12"], continuation=" next turn", **base)) == (
          " next turn")
  assert samples_lib.reference_continuation(Sample(answers=[], **base)) is None


def test_sample_length_counts_bos_prompt_and_new_tokens():
  # "Some context.\nWhat is it? It is" -> Some context . What is it ? It is
  assert samples_lib.sample_length(_sample(), WordTokenizer()) == 1 + 9 + 8


def test_count_tokens_prefers_count_method():
  class Counting(WordTokenizer):
    def count(self, text):
      return 1000

  assert samples_lib.count_tokens(WordTokenizer(), "a b, c") == 4
  assert samples_lib.count_tokens(Counting(), "a b, c") == 1000


def test_jsonl_round_trip(tmp_path):
  originals = [
      _sample(),
      _sample(id="s-1", answers=["a", "b"], metadata={"depths": [3, 50]}),
      _sample(id="d-0", task="dialogues", question="", answer_prefix="",
              answers=[], context="A: hi\n", continuation="B: héllo ✓",
              max_new_tokens=3),
  ]
  path = samples_lib.write_samples(tmp_path / "sub" / "x.jsonl", originals)
  assert samples_lib.read_samples(path) == originals
  lines = path.read_text(encoding="utf-8").splitlines()
  assert len(lines) == 3
  assert list(json.loads(lines[0])) == [
      "id", "task", "context", "question", "answer_prefix", "answers",
      "max_new_tokens", "continuation", "metadata"]
  assert "héllo ✓" in lines[2]  # written as UTF-8, not escaped
  assert os.listdir(tmp_path / "sub") == ["x.jsonl"]  # no temporary left


def test_failed_write_keeps_the_old_file(tmp_path):
  path = samples_lib.write_samples(tmp_path / "x.jsonl", [_sample()])
  before = path.read_bytes()

  def broken():
    yield _sample(id="new")
    raise RuntimeError("generator failed")

  with pytest.raises(RuntimeError):
    samples_lib.write_samples(path, broken())
  assert path.read_bytes() == before
  assert os.listdir(tmp_path) == ["x.jsonl"]


def _write_lines(path, lines):
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return path


@pytest.mark.parametrize("bad_line, problem", [
    ('{"id": "x", "task": ', r"bad JSON"),
    ("[1, 2]", r"must be a JSON object"),
    (json.dumps({k: v for k, v in _record(id="x").items() if k != "answers"}),
     r"missing field 'answers'"),
    (json.dumps(_record(id="x", answers="42")),
     r"field 'answers' must be a list"),
    (json.dumps(_record(id="x", answers=["ok", 7])),
     r"'answers'\[1\] must be a string"),
    (json.dumps(_record(id="x", max_new_tokens="8")),
     r"'max_new_tokens' must be an integer"),
    (json.dumps(_record(id="x", max_new_tokens=True)),
     r"'max_new_tokens' must be an integer"),
    (json.dumps(_record(id="x", max_new_tokens=-1)), r"must be >= 0"),
    (json.dumps(_record(id="x", context=None)),
     r"field 'context' must be a string"),
    (json.dumps(_record(id="x", metadata=[])),
     r"field 'metadata' must be an object"),
    (json.dumps(_record(id="x", answer=["typo"])), r"unknown field.*answer"),
    (json.dumps(_record(id="")), r"'id' must not be empty"),
    (json.dumps(_record(id="x", answers=[])), r"needs 'answers' or a "
     r"'continuation'"),
    (json.dumps(_record(id="s-0")), r"id 's-0' repeats the one on line 1"),
])
def test_malformed_record_names_file_and_line(tmp_path, bad_line, problem):
  path = _write_lines(tmp_path / "user.jsonl", [
      json.dumps(_record()),
      "",  # blank lines are skipped but still counted
      json.dumps(_record(id="s-1")),
      bad_line,
      json.dumps(_record(id="s-9")),
  ])
  with pytest.raises(SampleError, match=problem) as info:
    samples_lib.read_samples(path)
  assert info.value.line == 4
  assert info.value.path == str(path)
  assert str(info.value).startswith(f"{path}:4: ")


def test_from_dict_without_a_file():
  with pytest.raises(SampleError, match="missing field 'task'") as info:
    Sample.from_dict({"id": "x"})
  assert info.value.path is None and info.value.line is None
  assert Sample.from_dict(_sample().to_dict()) == _sample()


def test_read_sample_files_concatenates(tmp_path):
  a = samples_lib.write_samples(tmp_path / "a.jsonl", [_sample(id="a")])
  b = samples_lib.write_samples(tmp_path / "b.jsonl", [_sample(id="b")])
  assert [s.id for s in samples_lib.read_sample_files([a, b])] == ["a", "b"]


def _brute_force(length, budget, upper):
  return max(n for n in range(upper + 1) if length(n) <= budget)


@pytest.mark.parametrize("seed", range(6))
def test_fit_count_matches_brute_force(seed):
  rng = random.Random(seed)
  base = rng.randint(0, 200)
  unit = [rng.randint(1, 40) for _ in range(3000)]
  prefix = [0]
  for u in unit:
    prefix.append(prefix[-1] + u)
  total = lambda n: base + prefix[n]
  calls = []

  def length(n):
    calls.append(n)
    return total(n)

  for budget in (base, base + 1, base + 500, base + 12345, base + 30000):
    calls.clear()
    got = samples_lib.fit_count(length, budget, 2000)
    assert got == _brute_force(total, budget, 2000)
    assert len(calls) < 40  # far fewer measurements than units


def test_fit_count_edges():
  assert samples_lib.fit_count(lambda n: 10 + n, 1000, 50) == 50  # all fit
  assert samples_lib.fit_count(lambda n: 10 + n, 10, 50) == 0
  with pytest.raises(ValueError, match="fixed part"):
    samples_lib.fit_count(lambda n: 10 + n, 9, 50)
