"""RULER-style tasks: answers re-derived from the generated text, lengths
fitted with the real tokenizer, determinism, scoring and the command line."""

import collections
import re
import subprocess
import sys
import uuid

import pytest

from kvp_jax.samples import haystacks
from data_pipelines import make_samples
from kvp_jax.samples import ruler
from kvp_jax import samples as samples_lib
from kvp_jax.samples import metrics
from kvp_jax.samples import scoring

ALL_TASKS = ["niah_single_1", "niah_single_2", "niah_single_3",
             "niah_multikey_1", "niah_multikey_2", "niah_multikey_3",
             "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe"]
NIAH_TASKS = [t for t in ALL_TASKS if t.startswith("niah")]
# Largest gap below the target: about one haystack unit (an essay sentence
# is up to ~90 Gemma tokens, a UUID needle ~85, a noise line 24).
TOLERANCE = {"niah_single_2": 96, "niah_single_3": 96, "niah_multikey_1": 96,
             "niah_multikey_3": 96, "niah_multivalue": 96,
             "niah_multiquery": 96}
DEFAULT_TOLERANCE = 32
NEEDLE_RE = re.compile(
    r"One of the special magic (numbers|uuids|words) for (\S+) is: (\S+)\.")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}"
                     r"-[0-9a-f]{12}$")


class WordTokenizer:
  """Cheap stand-in: one token per word, digit or punctuation mark."""

  def encode(self, text, add_bos=False):
    return [2] * add_bos + [0] * len(re.findall(r"\d|[A-Za-z]+|\S", text))


@pytest.fixture(scope="module")
def generated():
  """Three samples of every task at 2048 tokens (stand-in tokenizer)."""
  return {task: ruler.generate_task(task, 3, 2048, WordTokenizer(), seed=7)
          for task in ALL_TASKS}


def test_registry_names():
  assert ruler.task_names() == ALL_TASKS
  assert ruler.task_spec("vt").max_new_tokens == 30
  assert {ruler.task_spec(t).max_new_tokens for t in NIAH_TASKS} == {128}


def test_unknown_task_raises_listing_known_ones():
  with pytest.raises(ValueError, match=r"unknown task 'niah_single_9'.*"
                     r"niah_single_1, .*fwe"):
    ruler.generate_task("niah_single_9", 1, 1024, WordTokenizer(), 0)


def test_target_too_short_raises():
  with pytest.raises(ValueError, match="does not fit in 150 tokens"):
    ruler.generate_task("niah_single_1", 1, 150, WordTokenizer(), 0)


@pytest.mark.parametrize("task", ALL_TASKS)
def test_samples_are_valid_records(generated, task):
  for index, sample in enumerate(generated[task]):
    assert samples_lib.Sample.from_dict(sample.to_dict()) == sample
    assert sample.id == f"{task}-2048-7-{index}"
    assert sample.task == task
    assert sample.max_new_tokens == ruler.task_spec(task).max_new_tokens
    assert sample.continuation is None
    assert sample.metadata["metric"] == "string_match_all"
    length = samples_lib.sample_length(sample, WordTokenizer())
    assert length == sample.metadata["num_tokens"]
    assert 2048 - 100 <= length <= 2048


def _query_keys(question):
  query = re.search(r"for (.+) mentioned in the provided text\?",
                    question).group(1)
  return re.split(r", and |, ", query)


@pytest.mark.parametrize("task", NIAH_TASKS)
def test_niah_answers_are_the_queried_needles(generated, task):
  config = ruler.task_spec(task).config
  for sample in generated[task]:
    needles = NEEDLE_RE.findall(sample.context)
    by_key = collections.defaultdict(list)
    for kind, key, value in needles:
      assert kind == config.value_type
      by_key[key].append(value)
    queried = _query_keys(sample.question)
    assert len(queried) == config.num_queries
    expected = [v for key in queried for v in by_key[key]]
    assert sorted(expected) == sorted(sample.answers)
    assert len(sample.answers) == config.num_queries * config.num_values
    for key in queried:
      assert len(by_key[key]) == config.num_values  # no distractor reuses it
      assert key in sample.answer_prefix
    for answer in sample.answers:
      assert sample.context.count(answer) == 1
      if config.value_type == "numbers":
        assert re.fullmatch(r"[1-9]\d{6}", answer)
      else:
        assert UUID_RE.match(answer) and uuid.UUID(answer).version == 4
    if config.haystack == "needle":
      assert len(by_key) > 20  # a haystack of distractor needles
      assert len(needles) == len(set(k for _, k, _ in needles))
    else:
      assert len(needles) == config.num_keys * config.num_values
    if config.haystack == "noise":
      assert sample.context.count(haystacks.NOISE) > 20
    if config.haystack == "essay":
      assert haystacks.NOISE not in sample.context
      sentences = set(haystacks.essay_sentences())
      assert sum(s in sentences for s in re.split(
          r"(?<=\.) ", sample.context.split("\n", 1)[1])) > 10
    if config.key_type == "words":
      assert all(re.fullmatch(r"[a-z]+-[a-z]+", k) for k in queried)


def test_niah_prompt_wording(generated):
  single = generated["niah_single_1"][0]
  assert single.context.startswith(
      "A special magic number is hidden within the following text.")
  assert single.question.startswith("What is the special magic number for ")
  assert single.answer_prefix.endswith(" mentioned in the provided text is")
  multi = generated["niah_multivalue"][0]
  assert multi.context.startswith("Some special magic numbers are hidden")
  assert multi.question.startswith("What are all the special magic numbers")
  assert multi.answer_prefix.endswith(" mentioned in the provided text are")
  prompt = samples_lib.prompt_text(single)
  assert prompt.endswith("\n" + single.question + single.answer_prefix)


def _resolve_variables(text):
  """Value of every VAR in the text, by following the assignments."""
  direct = dict(re.findall(r"VAR ([A-Z]+) = (\d+)", text))
  links = dict(re.findall(r"VAR ([A-Z]+) = VAR ([A-Z]+)", text))

  def value(name, depth=0):
    assert depth < 100
    return direct[name] if name in direct else value(links[name], depth + 1)

  return {name: value(name) for name in set(direct) | set(links)}


def test_vt_answers_rederived(generated):
  for sample in generated["vt"]:
    value = re.search(r"assigned the value (\d+) in the text above",
                      sample.question).group(1)
    resolved = _resolve_variables(sample.context)
    expected = sorted(name for name, v in resolved.items() if v == value)
    assert sorted(sample.answers) == expected
    assert len(expected) == 5
    assert f"5 variables are assigned the value {value}" in (
        sample.answer_prefix)
    # The worked example names its own chain, with another value.
    example_answer = re.search(r"they are: ([A-Z ]+)\n", sample.context)
    example_vars = example_answer.group(1).split()
    assert len({resolved[v] for v in example_vars}) == 1
    assert resolved[example_vars[0]] != value
    # Statements of the asked chain appear in chain order.
    main = sample.context.split("\n\n")[-1]
    positions = [main.index(f"VAR {name} =") for name in sample.answers]
    assert positions == sorted(positions)


def _cwe_main_list(sample):
  intro = "Memorize the ones that appear most often.\n"
  return sample.context[sample.context.rindex(intro) + len(intro):]


def test_cwe_answers_are_the_most_common_words(generated):
  for sample in generated["cwe"]:
    entries = re.findall(r"(\d+)\. ([a-z]+)", _cwe_main_list(sample))
    assert [int(i) for i, _ in entries] == list(range(1, len(entries) + 1))
    counts = collections.Counter(word for _, word in entries)
    assert len(sample.answers) == 10
    top = {w for w, _ in counts.most_common(10)}
    assert top == set(sample.answers)
    others = [c for w, c in counts.items() if w not in top]
    assert min(counts[w] for w in sample.answers) > max(others)
    assert "What are the 10 most common words" in sample.question


def test_fwe_answers_are_the_most_frequent_coded_words(generated):
  for sample in generated["fwe"]:
    text = sample.context.split("coded words. ", 1)[1]
    counts = collections.Counter(text.split())
    assert counts.most_common(1)[0][0] == "..."
    del counts["..."]
    ranked = counts.most_common()
    assert {w for w, _ in ranked[:3]} == set(sample.answers)
    assert ranked[2][1] > ranked[3][1]
    assert all(re.fullmatch(r"[a-z]{6}", w) for w in counts)


@pytest.mark.parametrize("task", ALL_TASKS)
def test_real_tokenizer_lengths_just_under_target(tokenizer, task):
  samples = ruler.generate_task(task, 2, 1024, tokenizer, seed=3)
  for sample in samples:
    length = samples_lib.sample_length(sample, tokenizer)
    assert length == sample.metadata["num_tokens"]
    assert 1024 - TOLERANCE.get(task, DEFAULT_TOLERANCE) <= length <= 1024
    ids = tokenizer.encode(samples_lib.prompt_text(sample), add_bos=True)
    assert len(ids) + sample.max_new_tokens == length


def test_same_seed_same_samples_other_seed_differs():
  tok = WordTokenizer()
  for task in ("niah_single_2", "niah_multikey_2", "vt", "cwe", "fwe"):
    a = [s.to_dict() for s in ruler.generate_task(task, 3, 1024, tok, 11)]
    b = [s.to_dict() for s in ruler.generate_task(task, 3, 1024, tok, 11)]
    c = [s.to_dict() for s in ruler.generate_task(task, 3, 1024, tok, 12)]
    assert a == b
    assert all(x["context"] != y["context"] for x, y in zip(a, c))
    assert all(x["answers"] != y["answers"] for x, y in zip(a, c))
    # Sample i does not depend on how many samples are asked for.
    assert [s.to_dict() for s in ruler.generate_task(task, 2, 1024, tok,
                                                     11)] == a[:2]


def test_samples_within_a_set_differ(generated):
  for task in ALL_TASKS:
    answers = [tuple(s.answers) for s in generated[task]]
    assert len(set(answers)) == len(answers)


def test_scoring_functions():
  refs = ["1234567", "ABC-def"]
  assert metrics.string_match_all("the numbers are 1234567 and abc-DEF",
                                  refs) == 1.0
  assert metrics.string_match_all("only 1234567", refs) == 0.5
  assert metrics.string_match_all("nothing", refs) == 0.0
  assert metrics.string_match_part("only abc-def here", refs) == 1.0
  assert metrics.string_match_part("nothing", refs) == 0.0
  with pytest.raises(ValueError):
    metrics.string_match_all("x", [])
  with pytest.raises(ValueError):
    metrics.string_match_all("x", "1234567")
  assert metrics.postprocess_prediction("  7\x00 1\t ") == "7\n 1"


def test_score_sample_uses_the_task_metric(generated):
  sample = generated["niah_multivalue"][0]
  assert scoring.metric_of(sample) == "string_match_all"
  answers = sample.answers
  assert scoring.score_sample(sample, " " + ", ".join(answers)) == 1.0
  assert scoring.score_sample(sample, answers[0].upper()) == 0.25
  assert scoring.mean_score([sample, sample], [answers[0], ""]) == 0.125
  user = samples_lib.Sample(id="u", task="mine", context="c", question="q",
                            answer_prefix="", answers=["x", "y"],
                            max_new_tokens=4,
                            metadata={"metric": "string_match_part"})
  assert scoring.score_sample(user, "Y") == 1.0
  continuation = samples_lib.Sample(id="d", task="dialogues", context="c",
                                    question="", answer_prefix="",
                                    answers=[], max_new_tokens=2,
                                    continuation="more")
  assert scoring.metric_of(continuation) == "perplexity"
  with pytest.raises(ValueError, match="perplexity"):
    scoring.score_sample(continuation, "anything")


def test_make_samples_writes_one_file_per_task_and_length(tmp_path):
  paths = make_samples.make_samples(
      tmp_path, tasks=["niah_single_1", "vt"], lengths=[1024, 2048],
      num_samples=2, seed=0, tokenizer=WordTokenizer(), progress=False)
  names = sorted(p.name for p in tmp_path.iterdir())
  assert names == ["niah_single_1_1024.jsonl", "niah_single_1_2048.jsonl",
                   "vt_1024.jsonl", "vt_2048.jsonl"]
  assert sorted(p.name for p in paths) == names
  for path in paths:
    samples = samples_lib.read_samples(path)
    assert len(samples) == 2
    length = int(path.stem.rsplit("_", 1)[1])
    assert all(s.metadata["target_length"] == length for s in samples)


def test_make_samples_helpers():
  assert make_samples.parse_length("4k") == 4096
  assert make_samples.parse_length("1500") == 1500
  for bad in ("", "0", "-5", "k", "4m"):
    with pytest.raises(ValueError):
      make_samples.parse_length(bad)
  assert make_samples.resolve_tasks(["all"]) == ALL_TASKS
  assert make_samples.resolve_tasks(["vt", "vt", "cwe"]) == ["vt", "cwe"]


def test_cli_unknown_task_fails_with_known_names(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "data_pipelines.make_samples",
       "--tasks=niah_single_1,bogus", f"--output_dir={tmp_path}"],
      capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode != 0
  assert "unknown task 'bogus'" in result.stderr
  assert "niah_multikey_3" in result.stderr
  assert list(tmp_path.iterdir()) == []
