"""Long conversations with planted facts, and questions about them (offline).

For EpiCache-style evaluation (one long conversation compressed once, then
several questions asked against it): each conversation joins chitchat
dialogues (the `chitchat-dataset` package, loaded as kvp_jax.samples.dialogues
does; in an order shuffled by the seed, none reused before all were used)
into one transcript of about `target_length` tokens, one turn a line,
sessions separated by a blank line:

  A: Hello How are you doing today?
  B: whats up MD im doing good how are you doing? By the way, my cat is
     called Mochi, she sleeps on my keyboard all day.

`num_facts` facts (a pet's name, a city, a number, a date; each about its
own subject, so each question has one answer) are appended, in natural
wording, to random turns: the turns are cut into num_facts equal parts and
each fact goes into a random turn of its own part, so the facts are spread
from the start to the end of the conversation. Every fact is asked about
once ("What is the name of B's cat?"), the reference answer being the
planted value, scored by string match (kvp_jax.samples.scoring,
string_match_all: the answer contained in the prediction, ignoring case).
A value is never one that occurs anywhere else in the conversation.

Records: one Sample per (conversation, question), all of a conversation
sharing the same `context` and `metadata["conversation_id"]`, with
`metadata["question_index"]` (0..num_questions-1) the order to ask them in,
so a runner can prefill and compress the context once and ask the questions
one after another against that state. `metadata["fact"]` says where the
answer is: the turn index, the character span of the planted sentence in
the context, its relative depth. Lengths: every sample (BOS + context,
question and answer prefix + max_new_tokens) fits in `target_length`, the
context being cut at a turn so that the longest question still fits.
Everything is deterministic for a seed.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Callable, Sequence, Union

from kvp_jax.samples import dialogues
from kvp_jax.samples import metrics
from kvp_jax.samples import schema as samples_lib

TASK = "long_conversations"
QUESTION = "Answer the question about the conversation above. Question: {q}"
ANSWER_PREFIX = " Answer:"

_PETS = ("Biscuit", "Pepper", "Mochi", "Waffles", "Juniper", "Pickles",
         "Noodle", "Clementine", "Ziggy", "Marmalade", "Tofu", "Roscoe",
         "Pumpkin", "Nutmeg", "Sprocket", "Bramble", "Paprika", "Dumpling",
         "Gizmo", "Truffle", "Oatmeal", "Pistachio", "Wasabi", "Crumpet")
_CITIES = ("Lisbon", "Reykjavik", "Montevideo", "Tallinn", "Ljubljana",
           "Porto", "Valparaiso", "Kyoto", "Edmonton", "Tucson", "Halifax",
           "Wellington", "Krakow", "Bologna", "Asheville", "Boise",
           "Savannah", "Adelaide", "Winnipeg", "Marseille", "Gdansk",
           "Cartagena", "Trondheim", "Dubrovnik")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July",
           "August", "September", "October", "November", "December")


@dataclasses.dataclass(frozen=True)
class FactTemplate:
  """One subject a fact can be about.

  kind: "pet", "city", "number" or "date".
  subject: unique name of what is asked about.
  sentence: the planted wording, with {v} for the value.
  question: the question, with {s} for the speaker letter.
  """
  kind: str
  subject: str
  sentence: str
  question: str


TEMPLATES = (
    FactTemplate("pet", "puppy",
                 "By the way, we adopted a puppy last week and named him {v}.",
                 "What did {s} name the puppy they adopted?"),
    FactTemplate("pet", "cat",
                 "By the way, my cat is called {v}, she sleeps on my keyboard "
                 "all day.", "What is the name of {s}'s cat?"),
    FactTemplate("city", "move",
                 "I'm actually moving to {v} next month for a new job.",
                 "Which city is {s} moving to for a new job?"),
    FactTemplate("city", "hometown",
                 "Fun fact, I grew up in {v} before my family moved.",
                 "In which city did {s} grow up?"),
    FactTemplate("number", "apartment",
                 "My new apartment number is {v}, I keep forgetting it.",
                 "What is {s}'s new apartment number?"),
    FactTemplate("number", "locker",
                 "The code of my gym locker is {v}, which I always mix up.",
                 "What is the code of {s}'s gym locker?"),
    FactTemplate("date", "wedding",
                 "My sister's wedding is on {v}, so I have to book flights "
                 "soon.", "On what date is {s}'s sister's wedding?"),
    FactTemplate("date", "driving_test",
                 "My driving test is scheduled for {v}, wish me luck.",
                 "On what date is {s}'s driving test?"),
)
KINDS = ("pet", "city", "number", "date")

TokenCounter = Union[samples_lib.TokenizerLike, Callable[[str], int]]


class _Counter:
  """A token-count function as a TokenizerLike (samples.count_tokens)."""

  def __init__(self, count: Callable[[str], int]):
    self.count = count

  def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
    return [0] * (int(add_bos) + int(self.count(text)))


def _tokenizer(tokenizer: TokenCounter) -> samples_lib.TokenizerLike:
  if hasattr(tokenizer, "encode"):
    return tokenizer
  if callable(tokenizer):
    return _Counter(tokenizer)
  raise TypeError(f"tokenizer must have `encode` or be a token-count "
                  f"function, got {type(tokenizer).__name__}")


def _value(kind: str, rng: random.Random) -> str:
  if kind == "pet":
    return rng.choice(_PETS)
  if kind == "city":
    return rng.choice(_CITIES)
  if kind == "number":
    return str(rng.randint(1000, 9899))
  # Days 10..28: no answer is a prefix of another ("March 1" of "March 17").
  return f"{rng.choice(_MONTHS)} {rng.randint(10, 28)}"


def pick_templates(num_facts: int, rng: random.Random) -> list[FactTemplate]:
  """num_facts templates of distinct subjects, the kinds taken in turn (a
  shuffled order of the four kinds) so that 4 facts cover all four."""
  if not 1 <= num_facts <= len(TEMPLATES):
    raise ValueError(f"num_facts must be in [1, {len(TEMPLATES)}] (one per "
                     f"subject), got {num_facts}")
  kinds = list(KINDS)
  rng.shuffle(kinds)
  by_kind = {k: [t for t in TEMPLATES if t.kind == k] for k in kinds}
  for pool in by_kind.values():
    rng.shuffle(pool)
  out = []
  while len(out) < num_facts:
    for kind in kinds:
      if by_kind[kind] and len(out) < num_facts:
        out.append(by_kind[kind].pop())
  return out


@dataclasses.dataclass(frozen=True)
class _Turn:
  session: int
  speaker: str
  text: str


def _render(turns: Sequence[_Turn], planted: dict[int, str]
            ) -> tuple[str, dict[int, tuple[int, int]]]:
  """The transcript of `turns` with planted[i] appended to turn i; returns
  (text, {turn: (start, end) of its planted sentence in the text})."""
  parts: list[str] = []
  size = 0
  spans = {}
  for i, turn in enumerate(turns):
    if i and turn.session != turns[i - 1].session:
      parts.append("\n")
      size += 1
    line = f"{turn.speaker}: {turn.text}"
    if i in planted:
      if not line.endswith((".", "!", "?")):
        line += "."
      start = size + len(line) + 1
      line = f"{line} {planted[i]}"
      spans[i] = (start, start + len(planted[i]))
    parts.append(line + "\n")
    size += len(line) + 1
  return "".join(parts).rstrip("\n"), spans


def generate_long_conversations(
    num_conversations: int, target_length: int, tokenizer: TokenCounter,
    seed: int, *, num_facts: int = 4, max_new_tokens: int = 16,
    conversations: Sequence[dialogues.Conversation] | None = None
) -> list[samples_lib.Sample]:
  """Long-conversation QA samples (see the module docstring).

  Args:
    num_conversations: long conversations to build (each gives num_facts
      samples).
    target_length: bound on every sample's BOS + prompt + max_new_tokens
      tokens (4096 to 8192 for EpiCache-style runs).
    tokenizer: anything with `encode` (and optionally `count`), or a
      function text -> number of tokens.
    seed: the conversation order, the facts, their values and places.
    num_facts: facts planted, and questions asked, per conversation.
    max_new_tokens: tokens to generate per answer.
    conversations: defaults to dialogues.load_conversations().
  Returns:
    num_conversations x num_facts Samples, conversation by conversation,
    each conversation's in question order.
  Raises:
    ValueError: bad counts, or a target too short for num_facts facts (two
      turns per fact at least) or for the question alone.
  """
  for name, value in (("num_conversations", num_conversations),
                      ("target_length", target_length),
                      ("max_new_tokens", max_new_tokens)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be a positive int, got {value!r}")
  tok = _tokenizer(tokenizer)
  if conversations is None:
    conversations = dialogues.load_conversations()
  if not conversations:
    raise ValueError("no conversations to build long conversations from")
  order = list(range(len(conversations)))
  random.Random(f"{TASK}|{seed}").shuffle(order)
  cursor = 0
  out: list[samples_lib.Sample] = []
  for index in range(num_conversations):
    rng = random.Random(f"{TASK}|{seed}|{index}")
    # Enough whole dialogues to pass the target (counted turn by turn).
    turns: list[_Turn] = []
    sources: list[str] = []
    total = 0
    while total < target_length:
      if cursor == len(order):
        if not sources:
          raise ValueError("the conversations hold no turns")
        cursor = 0
      conversation = conversations[order[cursor]]
      cursor += 1
      sources.append(conversation.id)
      for speaker, text in conversation.turns:
        turns.append(_Turn(len(sources) - 1, speaker, text))
        total += samples_lib.count_tokens(tok, f"{speaker}: {text}\n")
    if len(turns) < 2 * num_facts:
      raise ValueError(f"{len(turns)} turns are too few for {num_facts} facts")
    templates = pick_templates(num_facts, rng)
    pool_text = _render(turns, {})[0].lower()
    values: list[str] = []
    for t in templates:
      value = _value(t.kind, rng)
      while value.lower() in pool_text or any(
          value.lower() in v.lower() or v.lower() in value.lower()
          for v in values):
        value = _value(t.kind, rng)
      values.append(value)
    where = list(range(num_facts))   # Template i goes to part where[i].
    rng.shuffle(where)
    pick_seed = rng.random()
    asked = list(range(num_facts))   # The order the questions are asked in.
    rng.shuffle(asked)

    def layout(n, templates=templates, values=values, where=where,
               pick_seed=pick_seed, turns=turns):
      """Planted sentences, questions and context for the first n turns."""
      pick = random.Random(f"{pick_seed}|{n}")
      planted, facts = {}, []
      for t, value, part in zip(templates, values, where):
        lo, hi = part * n // num_facts, (part + 1) * n // num_facts
        turn = pick.randrange(lo, hi)
        planted[turn] = t.sentence.format(v=value)
        facts.append((t, value, turn))
      context, spans = _render(turns[:n], planted)
      return context, facts, spans

    def question_of(fact, turns=turns):
      t, _, turn = fact
      return QUESTION.format(q=t.question.format(s=turns[turn].speaker))

    def length(n):
      context, facts, _ = layout(n)
      return max(samples_lib.sample_length(samples_lib.Sample(
          id="x", task=TASK, context=context, question=question_of(f),
          answer_prefix=ANSWER_PREFIX, answers=[f[1]],
          max_new_tokens=max_new_tokens), tok) for f in facts)

    lowest = 2 * num_facts
    if length(lowest) > target_length:
      raise ValueError(f"target_length={target_length} is too short: "
                       f"{num_facts} facts in {lowest} turns take "
                       f"{length(lowest)} tokens")
    n = lowest + samples_lib.fit_count(lambda k: length(lowest + k),
                                       target_length, len(turns) - lowest)
    context, facts, spans = layout(n)
    conversation_id = f"{TASK}-{target_length}-{seed}-{index}"
    used = sorted({turns[i].session for i in range(n)})
    for q_index, f in enumerate(asked):
      t, value, turn = facts[f]
      start, end = spans[turn]
      sample = samples_lib.Sample(
          id=f"{conversation_id}-q{q_index}", task=TASK, context=context,
          question=question_of(facts[f]), answer_prefix=ANSWER_PREFIX,
          answers=[value], max_new_tokens=max_new_tokens,
          metadata={
              "metric": metrics.STRING_MATCH_ALL,
              "target_length": target_length,
              "conversation_id": conversation_id,
              "question_index": q_index, "num_questions": num_facts,
              "num_turns": n,
              "sources": [sources[s] for s in used],
              "fact": {"kind": t.kind, "subject": t.subject,
                       "speaker": turns[turn].speaker, "turn": turn,
                       "value": value, "char_start": start, "char_end": end,
                       "depth": round(start / max(len(context), 1), 4)},
          })
      sample.metadata["num_tokens"] = samples_lib.sample_length(sample, tok)
      out.append(sample)
  return out
