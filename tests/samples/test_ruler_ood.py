"""The ood RULER-style family: determinism, index stability, lengths,
answers only in the needles, scoring, and its distance from ruler.py's
templates, keys and haystacks."""

import random
import re

import pytest

from kvp_jax import samples as samples_lib
from kvp_jax.samples import dialogues
from kvp_jax.samples import haystacks
from kvp_jax.samples import metrics
from kvp_jax.samples import ruler
from kvp_jax.samples import ruler_ood
from kvp_jax.samples import scoring
from kvp_jax.samples import sources
from kvp_jax.samples import words

TASKS = ["ood_single", "ood_multikey", "ood_multivalue", "ood_multiquery",
         "ood_vt", "ood_collect"]
RULER_NEEDLE_RE = re.compile(
    r"One of the special magic (numbers|uuids|words) for (\S+) is: (\S+)\.")
# Largest gap below the target: about one haystack unit (a dialogue turn or
# a reference sentence, at most 400 characters).
TOLERANCE = 160


class WordTokenizer:
  """Cheap stand-in: one token per word, digit or punctuation mark."""

  def encode(self, text, add_bos=False):
    return [2] * add_bos + [0] * len(re.findall(r"\d|[A-Za-z]+|\S", text))


@pytest.fixture(scope="module")
def generated():
  """Four samples of every task at 2048 tokens (stand-in tokenizer): two
  with each haystack."""
  return {task: ruler_ood.generate_task(task, 4, 2048, WordTokenizer(), seed=7)
          for task in TASKS}


def _template_fragments(template):
  """The fixed text of a template between its placeholders (long pieces)."""
  return [p.strip() for p in re.split(r"\{[a-z]+\}", template)
          if len(p.strip()) >= 8]


def _ood_templates():
  return (list(ruler_ood.NEEDLE_TEMPLATES) + list(ruler_ood.INTRO_TEMPLATES)
          + [t for pair in ruler_ood.QUESTION_TEMPLATES +
             ruler_ood.PLURAL_QUESTION_TEMPLATES for t in pair]
          + list(ruler_ood.VT_INIT_TEMPLATES + ruler_ood.VT_COPY_TEMPLATES)
          + [ruler_ood.VT_INTRO, ruler_ood.VT_QUESTION,
             ruler_ood.VT_ANSWER_PREFIX]
          + list(ruler_ood.COLLECT_TEMPLATES)
          + [ruler_ood.COLLECT_INTRO, ruler_ood.COLLECT_QUESTION,
             ruler_ood.COLLECT_ANSWER_PREFIX])


def test_registry():
  assert ruler_ood.task_names() == TASKS
  assert all(task.startswith("ood_") for task in TASKS)
  assert not set(TASKS) & set(ruler.TASKS)
  with pytest.raises(ValueError, match=r"unknown ood task 'niah_single_1'"):
    ruler_ood.generate_task("niah_single_1", 1, 2048, WordTokenizer(), 0)


def test_target_too_short_raises():
  with pytest.raises(ValueError, match="does not fit in 60 tokens"):
    ruler_ood.generate_sample("ood_single", 0, 60, WordTokenizer(), 0)


@pytest.mark.parametrize("task", TASKS)
def test_deterministic_and_index_stable(generated, task):
  again = ruler_ood.generate_task(task, 3, 2048, WordTokenizer(), seed=7)
  assert again == generated[task][:3]
  assert ruler_ood.generate_sample(task, 3, 2048, WordTokenizer(),
                                   seed=7) == generated[task][3]
  other = ruler_ood.generate_sample(task, 0, 2048, WordTokenizer(), seed=8)
  assert other.context != generated[task][0].context
  assert other.answers != generated[task][0].answers


@pytest.mark.parametrize("task", TASKS)
def test_samples_are_valid_and_fit(generated, task):
  spec = ruler_ood.task_spec(task)
  for index, sample in enumerate(generated[task]):
    assert samples_lib.Sample.from_dict(sample.to_dict()) == sample
    assert sample.id == f"{task}-2048-7-{index}"
    assert sample.task == task and sample.continuation is None
    assert sample.max_new_tokens == spec.max_new_tokens
    assert sample.metadata["haystack"] == ruler_ood.HAYSTACKS[index % 2]
    length = samples_lib.sample_length(sample, WordTokenizer())
    assert length == sample.metadata["num_tokens"]
    assert 2048 - TOLERANCE <= length <= 2048


@pytest.mark.parametrize("length", [2048, 4096])
def test_fits_with_the_real_tokenizer(tokenizer, length):
  for task in TASKS:
    for index in (0, 1):
      sample = ruler_ood.generate_sample(task, index, length, tokenizer, 11)
      measured = samples_lib.sample_length(sample, tokenizer)
      assert measured == sample.metadata["num_tokens"]
      assert length - TOLERANCE <= measured <= length, (task, index)


@pytest.mark.parametrize("task", TASKS)
def test_needles_at_their_depths_and_answers_only_there(generated, task):
  for sample in generated[task]:
    needles = sample.metadata["needles"]
    assert sample.metadata["depths"] == sorted(sample.metadata["depths"])
    assert set(sample.metadata["depths"]) <= set(ruler.DEPTHS)
    positions = [sample.context.index(needle) for needle in needles]
    assert positions == sorted(positions)
    assert ruler_ood.stray_answers(sample) == []
    for answer in sample.answers:
      assert any(answer in needle for needle in needles)


@pytest.mark.parametrize("task", TASKS)
def test_scoring(generated, task):
  for sample in generated[task]:
    assert scoring.metric_of(sample) == metrics.STRING_MATCH_ALL
    assert scoring.score_sample(sample, " " + ", ".join(sample.answers)) == 1
    assert scoring.score_sample(sample, "I do not know.") == 0
    if len(sample.answers) > 1:
      assert scoring.score_sample(sample, sample.answers[0]) == pytest.approx(
          1 / len(sample.answers))


def test_multi_needle_tasks(generated):
  for sample in generated["ood_multikey"]:
    assert len(sample.metadata["keys"]) == 4 and len(sample.answers) == 1
    assert sample.metadata["queries"][0] in sample.question
  for sample in generated["ood_multivalue"]:
    assert len(sample.answers) == 3
    assert set(sample.answers) <= set(ruler_ood.VALUE_WORDS)
  for sample in generated["ood_multiquery"]:
    assert len(sample.answers) == 3
    assert all(key in sample.question for key in sample.metadata["keys"])
  for sample in generated["ood_single"]:
    assert re.fullmatch(r"[A-Z]{2}-\d{4}", sample.answers[0])
  for sample in generated["ood_collect"]:
    assert len(sample.answers) == 5
    assert not set(sample.answers) & set(sample.metadata["distractors"])
    assert sample.metadata["item"] in sample.question


def test_numbers_never_have_the_training_family_s_seven_digits():
  rng = random.Random(0)
  lengths = {len(ruler_ood.random_value("numbers", rng)) for _ in range(400)}
  assert lengths == {5, 6, 8, 9}


def test_tracking_chain(generated):
  for sample in generated["ood_vt"]:
    value = sample.metadata["value"]
    assert value in sample.question and value in sample.answer_prefix
    chain = sample.metadata["chains"][0]
    assert len(sample.answers) == 5 and value in chain[0]
    for a, b, statement in zip(sample.answers, sample.answers[1:], chain[1:]):
      assert a in statement and b in statement
    assert all(re.fullmatch(r"[a-z]{4}\d{2}", name) for name in sample.answers)


# -------------------------------------------- distance from ruler.py's family


@pytest.fixture(scope="module")
def ruler_prompts():
  """The fixed text of one sample of every ruler.py task: its intro (the
  context's first line), question and answer prefix."""
  out = []
  for task in ruler.task_names():
    sample = ruler.generate_sample(task, 0, 2048, WordTokenizer(), 7)
    out += [sample.context.split("\n")[0], sample.question,
            sample.answer_prefix]
  return out


def test_no_ood_template_in_ruler_templates(ruler_prompts):
  templates = _ood_templates()
  assert ruler.NEEDLE not in templates
  for template in templates:
    assert "special magic" not in template
    for fragment in _template_fragments(template) + [template]:
      assert fragment not in ruler.NEEDLE
      for text in ruler_prompts:
        assert fragment not in text, (fragment, text)
  ruler_fragments = _template_fragments(ruler.NEEDLE) + ["special magic"]
  for template in templates:
    assert not any(f in template for f in ruler_fragments)


def test_ood_prompts_hold_no_ruler_needle_or_question(generated,
                                                      ruler_prompts):
  for samples in generated.values():
    for sample in samples:
      text = samples_lib.prompt_text(sample)
      assert not RULER_NEEDLE_RE.search(text)
      assert "special magic" not in text
      assert sample.question not in ruler_prompts
      assert sample.answer_prefix not in ruler_prompts


def test_keys_and_value_words_are_not_words_py_keys(generated):
  key_words = {w.lower() for w in words.ADJECTIVES + words.NOUNS}
  vocabulary = ruler_ood.FIRST_NAMES + ruler_ood.SURNAMES + (
      ruler_ood.VALUE_WORDS)
  assert not {w.lower() for w in vocabulary} & key_words
  for samples in generated.values():
    for sample in samples:
      for key in sample.metadata.get("keys", []):
        first, surname = key.split(" ")
        assert first in ruler_ood.FIRST_NAMES
        assert surname in ruler_ood.SURNAMES
        assert not re.fullmatch(r"[a-z]+-[a-z]+", key)
        assert not {w.lower() for w in key.split()} & key_words


def test_reference_haystack_is_not_the_essay():
  sentences = ruler_ood.reference_sentences()
  assert len(sentences) > 500
  assert len(set(sentences)) == len(sentences)
  assert not set(sentences) & set(haystacks.essay_sentences())


def test_dialogue_haystack_is_the_heldout_pool():
  conversations = dialogues.load_conversations()
  heldout = {c.id for c in conversations if sources.in_pool(c.id, "heldout")}
  assert ruler_ood.heldout_conversation_ids() == heldout
  assert ruler_ood.HELDOUT_PERCENT == sources.HELDOUT_PERCENT
  allowed = {line.rstrip("\n") for c in conversations if c.id in heldout
             for line in dialogues.transcript_lines(c)}
  lines = ruler_ood.dialogue_lines()
  assert len(lines) > 5000
  assert all(line in allowed for line in lines if line)
