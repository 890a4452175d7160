"""Long-conversation QA samples: determinism, where the facts are, what is
asked, lengths, and string-match scoring of the references."""

import re

import pytest

from kvp_jax import samples as samples_lib
from kvp_jax.samples import dialogues
from kvp_jax.samples import long_conversations as lc
from kvp_jax.samples import scoring


def count_words(text):
  """Cheap stand-in tokenizer: one token per word, digit or mark."""
  return len(re.findall(r"\d|[A-Za-z]+|\S", text))


class WordTokenizer:
  def encode(self, text, add_bos=False):
    return [2] * add_bos + [0] * count_words(text)


@pytest.fixture(scope="module")
def conversations():
  return dialogues.load_conversations()


@pytest.fixture(scope="module")
def built(conversations):
  return lc.generate_long_conversations(3, 4096, count_words, seed=7,
                                        conversations=conversations)


def _by_conversation(samples):
  out = {}
  for s in samples:
    out.setdefault(s.metadata["conversation_id"], []).append(s)
  return out


def test_deterministic_for_a_seed(built, conversations):
  again = lc.generate_long_conversations(3, 4096, WordTokenizer(), seed=7,
                                         conversations=conversations)
  assert [s.to_dict() for s in again] == [s.to_dict() for s in built]
  other = lc.generate_long_conversations(3, 4096, count_words, seed=8,
                                         conversations=conversations)
  assert [s.context for s in other] != [s.context for s in built]


def test_records_share_a_conversation(built):
  groups = _by_conversation(built)
  assert len(groups) == 3 and len(built) == 12
  assert len({s.id for s in built}) == 12
  for cid, group in groups.items():
    assert [s.metadata["question_index"] for s in group] == [0, 1, 2, 3]
    assert len({s.context for s in group}) == 1
    assert all(s.metadata["num_questions"] == 4 for s in group)
    # Different facts, of all four kinds, about distinct subjects.
    facts = [s.metadata["fact"] for s in group]
    assert sorted(f["kind"] for f in facts) == sorted(lc.KINDS)
    assert len({f["subject"] for f in facts}) == 4
    assert len({s.question for s in group}) == 4
    for s in group:
      assert samples_lib.Sample.from_dict(s.to_dict()) == s
      assert s.task == lc.TASK and s.continuation is None
  # No conversation's dialogues are reused by the next one.
  sources = [set(g[0].metadata["sources"]) for g in groups.values()]
  assert not sources[0] & sources[1] and not sources[1] & sources[2]


def test_facts_sit_where_the_metadata_says(built, conversations):
  by_id = {c.id: c for c in conversations}
  for group in _by_conversation(built).values():
    context = group[0].context
    lines = [l for l in context.split("\n") if l]
    assert len(lines) == group[0].metadata["num_turns"]
    starts = sorted(s.metadata["fact"]["char_start"] for s in group)
    for s in group:
      f = s.metadata["fact"]
      answer = s.answers[0]
      assert f["value"] == answer
      sentence = context[f["char_start"]:f["char_end"]]
      template = next(t for t in lc.TEMPLATES if t.subject == f["subject"])
      assert sentence == template.sentence.format(v=answer)
      # The value occurs once, in the planted sentence, in the named turn,
      # said by the speaker the question names.
      assert context.lower().count(answer.lower()) == 1
      line = lines[f["turn"]]
      assert line.startswith(f"{f['speaker']}: ") and line.endswith(sentence)
      assert f"{f['speaker']}'s" in s.question or (
          f" {f['speaker']} " in s.question)
      assert answer.lower() not in s.question.lower()
      assert f["depth"] == pytest.approx(f["char_start"] / len(context),
                                         abs=1e-4)
    # Spread over the conversation: one fact in each quarter of the turns.
    quarters = sorted(s.metadata["fact"]["turn"] * 4 //
                      s.metadata["num_turns"] for s in group)
    assert quarters == [0, 1, 2, 3]
    assert starts[0] < len(context) / 2 < starts[-1]
    # Without the planted sentences the context is the source transcripts.
    plain = context
    for s in sorted(group, key=lambda s: -s.metadata["fact"]["char_start"]):
      f = s.metadata["fact"]
      plain = plain[:f["char_start"] - 1] + plain[f["char_end"]:]
    original = "\n".join("".join(dialogues.transcript_lines(by_id[i]))
                         for i in group[0].metadata["sources"])
    norm = lambda t: re.sub(r"[.]?\n", "\n", t)  # Added full stops.
    assert norm(original).startswith(norm(plain))


def test_lengths_within_the_target(built):
  for s in built:
    n = samples_lib.sample_length(s, WordTokenizer())
    assert n == s.metadata["num_tokens"]
    assert 4096 - 100 < n <= 4096


@pytest.mark.parametrize("target", [6144, 8192])
def test_longer_targets(conversations, target):
  out = lc.generate_long_conversations(1, target, count_words, seed=0,
                                       num_facts=6, max_new_tokens=8,
                                       conversations=conversations)
  assert len(out) == 6
  for s in out:
    assert target - 100 < samples_lib.sample_length(s, WordTokenizer()) <= target


def test_answers_found_by_string_match(built):
  for group in _by_conversation(built).values():
    for s in group:
      assert scoring.metric_of(s) == scoring.STRING_MATCH_ALL
      assert scoring.score_sample(s, s.answers[0]) == 1.0
      assert scoring.score_sample(s, f" It is {s.answers[0].lower()}.") == 1.0
      for other in group:          # Another planted fact is no answer.
        if other is not s:
          assert scoring.score_sample(s, other.answers[0]) == 0.0


def test_bad_settings(conversations):
  with pytest.raises(ValueError, match="num_facts must be in \\[1, 8\\]"):
    lc.generate_long_conversations(1, 4096, count_words, 0, num_facts=9,
                                   conversations=conversations)
  with pytest.raises(ValueError, match="target_length=40 is too short"):
    lc.generate_long_conversations(1, 40, count_words, 0,
                                   conversations=conversations)
  with pytest.raises(ValueError, match="target_length must be a positive"):
    lc.generate_long_conversations(1, 0, count_words, 0,
                                   conversations=conversations)
  with pytest.raises(TypeError, match="token-count function"):
    lc.generate_long_conversations(1, 4096, 12, 0, conversations=conversations)
