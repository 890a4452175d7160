"""RULER-style retrieval in a second template family (the "ood" tasks).

The training and dev suites draw every RULER-style sample from
kvp_jax.samples.ruler: one needle sentence ("One of the special magic ...
for ... is: ..."), adjective-noun keys, 7-digit numbers, noise, essay and
needle haystacks. The tasks here share none of that, so that a test suite
built from them is out of that distribution:

  ood_single      one needle; a name key, a product-code value ("QX-4471")
  ood_multikey    4 needles of one attribute under 4 names, one asked
  ood_multivalue  one name with 3 values (words of VALUE_WORDS)
  ood_multiquery  3 names, all asked about (UUID values)
  ood_vt          register tracking: a 4-hop chain of copies, with a
                  distractor chain holding another number
  ood_collect     aggregation: list every record of one kind (5 codes),
                  with 3 records of another kind in between

Keys are people's names (FIRST_NAMES x SURNAMES, no word of words.py's key
vocabulary); numbers have 5, 6, 8 or 9 digits (never the 7 of the training
family). Needle sentences, intros, questions and answer prefixes are drawn
per sample from several phrasings (NEEDLE_TEMPLATES, QUESTION_TEMPLATES,
...). Haystacks alternate with the sample index:

  even index  "dialogue": transcript lines of the chitchat conversations of
              the held-out pool (kvp_jax.samples.sources.in_pool), which the
              training traces never use (those with a turn over
              MAX_TURN_CHARS characters left out);
  odd index   "reference": sentences of the indented reference entries of
              the pydoc topics (method and attribute descriptions), which
              the essay haystack (haystacks.essay_sentences, flush-left prose
              only) never holds; any sentence it holds is left out.

Needles sit at ruler.DEPTHS (one distinct depth per needle). Each sample is
fitted under its target length (BOS + prompt + max_new_tokens) with
schema.fit_count, as in ruler.py, and scored with string_match_all
(metadata["metric"]). Sample `index` of (task, target_length, seed) depends
on nothing else, so generating more samples never changes the earlier ones.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
import string
import textwrap
import types
import uuid
import zlib
from typing import Callable, Mapping, Sequence

from kvp_jax.samples import dialogues
from kvp_jax.samples import documents
from kvp_jax.samples import haystacks
from kvp_jax.samples import metrics
from kvp_jax.samples import ruler
from kvp_jax.samples import schema as samples_lib

DIALOGUE_HAYSTACK = "dialogue"
REFERENCE_HAYSTACK = "reference"
HAYSTACKS = (DIALOGUE_HAYSTACK, REFERENCE_HAYSTACK)  # by index parity
# Conversations with a longer turn stay out of the dialogue haystack, so that
# one unit is never more than an essay sentence's 400 characters.
MAX_TURN_CHARS = 400
HELDOUT_PERCENT = 10  # sources.HELDOUT_PERCENT
DEPTHS = ruler.DEPTHS

# ------------------------------------------------------------- templates

NEEDLE_TEMPLATES = (
    "The {attr} assigned to {key} is {value}.",
    "Remember: {key}'s {attr} equals {value}.",
    "According to the registry, the {attr} of {key} reads {value}.",
    "Please note that {value} is the {attr} belonging to {key}.",
    "For future reference, {key} was given the {attr} {value}.",
)
INTRO_TEMPLATES = (
    "The text below mentions some {attrs} among unrelated material. Read it "
    "carefully: a question about them follows.",
    "Somewhere in the following text, {attrs} are recorded. Keep track of "
    "them; you will be asked about them at the end.",
)
# (question, answer prefix): one value asked for.
QUESTION_TEMPLATES = (
    ("Recall the {attr} of {key}.", " The {attr} of {key} is"),
    ("Which {attr} was given to {key} in the text above?",
     " The {attr} given to {key} was"),
    ("Look back through the text: what {attr} does {key} have?",
     " {key} has the {attr}"),
)
# (question, answer prefix): several values asked for.
PLURAL_QUESTION_TEMPLATES = (
    ("Which {attrs} belong to {keys}?",
     " The {attrs} belonging to {keys} are"),
    ("List every {attr} that the text above gives for {keys}.",
     " The {attrs} given for {keys} are"),
)
# Attribute names (singular, plural) for each kind of value.
ATTRIBUTES: Mapping[str, tuple[tuple[str, str], ...]] = types.MappingProxyType({
    "codes": (("access code", "access codes"), ("parcel code", "parcel codes"),
              ("badge code", "badge codes"),
              ("voucher code", "voucher codes")),
    "numbers": (("locker combination", "locker combinations"),
                ("account number", "account numbers"),
                ("membership number", "membership numbers")),
    "uuids": (("tracking identifier", "tracking identifiers"),
              ("session token", "session tokens")),
    "words": (("password", "passwords"), ("codeword", "codewords")),
})

VT_INIT_TEMPLATES = (
    "Store {value} in register {a}.",
    "Register {a} now holds the number {value}.",
)
VT_COPY_TEMPLATES = (
    "Copy the contents of register {a} into register {b}.",
    "Register {b} takes whatever register {a} holds.",
)
VT_INTRO = ("Some registers are loaded and copied in the text below. Follow "
            "every copy.")
VT_QUESTION = ("Query: Which registers end up holding the value {value}? "
               "Name all of them.")
VT_ANSWER_PREFIX = " Response: the registers holding {value} are"

COLLECT_TEMPLATES = (
    "A new {item} was opened under the number {value}.",
    "Filed today: {item} {value}.",
    "The clerk stamped {item} {value} and put it away.",
)
# (asked-for item, distractor item).
COLLECT_ITEMS = (("support ticket", "invoice"), ("work order", "receipt"),
                 ("permit", "shipping label"))
COLLECT_INTRO = ("The text below logs {items} and other paperwork. Keep a "
                 "list of every {item}.")
COLLECT_QUESTION = ("Query: Which {item} numbers appear in the text above? "
                    "List all of them.")
COLLECT_ANSWER_PREFIX = " Response: the {item} numbers in the text are"

# ---------------------------------------------------------- vocabularies

FIRST_NAMES: tuple[str, ...] = tuple(sorted(set("""
  Adaeze Agnieszka Ainhoa Akosua Alejandro Anselm Aurelio Bartholomew
  Beatriz Benedikt Bronwen Casimir Cosima Dagny Dariusz Desmond Dorothea
  Eamon Eleftheria Emeka Esperanza Evander Fenella Florian Gideon Gunnhild
  Hamish Henrietta Ignatius Imogen Isidore Jovana Kasimir Kenji Ksenia
  Lavinia Leopold Lucinda Magnus Marisol Matthias Mireille Nkechi Octavia
  Oksana Ottilie Perpetua Quentin Radomir Rosalind Seraphina Solveig
  Tadeusz Thaddeus Ulrike Valentina Wilhelmina Xiomara Yevgenia Zephyrine
""".split())))
SURNAMES: tuple[str, ...] = tuple(sorted(set("""
  Abernathy Achterberg Adeyemi Albuquerque Andersson Arkwright Balogun
  Bergstrom Castellanos Chakraborty Dabrowski Delacroix Eriksdottir
  Fairweather Fitzgerald Galbraith Gonzaga Haverkamp Hollingsworth Ibekwe
  Iwasaki Jablonski Kaczmarek Kowalczyk Lindqvist Lombardi Mbeki Montgomery
  Nakagawa Nwachukwu Oyelaran Pemberton Quintero Rasmussen Rutherford
  Sandoval Szymanski Takahashi Thistlewood Umberger Vasquez Wainwright
  Whitcombe Yamamoto Zielinski
""".split())))
VALUE_WORDS: tuple[str, ...] = tuple(sorted(set("""
  alabaster anise azurite basalt beryl bismuth cardamom carnelian chervil
  cinnabar fenugreek feldspar galena garnet gneiss hematite jasper kyanite
  lapis licorice lovage magnetite malachite marjoram mica nutmeg obsidian
  onyx peridot pumice pyrite quartz rhodonite saffron sapphire sorrel
  spinel sumac tamarind tarragon topaz tourmaline turmeric zircon
""".split())))

_LETTERS = string.ascii_uppercase
_NUMBER_DIGITS = (5, 6, 8, 9)

# ---------------------------------------------------------------- specs


@dataclasses.dataclass(frozen=True)
class NeedleConfig:
  """Needles of one attribute under name keys.

  Attributes:
    value_type: "codes", "numbers", "uuids" or "words".
    num_keys: names with needles in the haystack.
    num_values: values (needles) per name.
    num_queries: names asked about (<= num_keys).
  """
  value_type: str
  num_keys: int = 1
  num_values: int = 1
  num_queries: int = 1


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
  """Chains of register copies; name every register of chain 0."""
  num_chains: int = 2
  num_hops: int = 4
  example_hops: int = 2


@dataclasses.dataclass(frozen=True)
class CollectConfig:
  """Records of one kind to list, with records of another kind between."""
  num_items: int = 5
  num_distractors: int = 3


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """A registered task: its generator's config, tokens to generate, metric."""
  name: str
  config: NeedleConfig | TrackingConfig | CollectConfig
  max_new_tokens: int
  metric: str = metrics.STRING_MATCH_ALL


TASKS: Mapping[str, TaskSpec] = types.MappingProxyType({
    spec.name: spec for spec in (
        TaskSpec("ood_single", NeedleConfig("codes"), 64),
        TaskSpec("ood_multikey", NeedleConfig("numbers", num_keys=4), 64),
        TaskSpec("ood_multivalue", NeedleConfig("words", num_values=3), 64),
        TaskSpec("ood_multiquery",
                 NeedleConfig("uuids", num_keys=3, num_queries=3), 128),
        TaskSpec("ood_vt", TrackingConfig(), 64),
        TaskSpec("ood_collect", CollectConfig(), 64),
    )
})


def task_names() -> list[str]:
  """Registered task names, in registry order."""
  return list(TASKS)


def task_spec(task: str) -> TaskSpec:
  """The spec of a registered task; ValueError naming the known ones."""
  if task not in TASKS:
    raise ValueError(f"unknown ood task {task!r}; known tasks: "
                     f"{', '.join(TASKS)}")
  return TASKS[task]


# ------------------------------------------------------------- haystacks


@functools.lru_cache(maxsize=1)
def reference_sentences() -> tuple[str, ...]:
  """Sentences of the pydoc topics' indented reference entries, in document
  order, once each, none of them an essay-haystack sentence (cached)."""
  essay = set(haystacks.essay_sentences())
  out: dict[str, None] = {}
  for doc in documents.pydoc_documents():
    for paragraph in re.split(r"\n\s*\n", doc.text):
      dedented = textwrap.dedent(paragraph)
      if dedented == paragraph:  # flush-left: the essay's part of the text
        continue
      for sentence in haystacks.prose_sentences(dedented):
        if sentence not in essay:
          out.setdefault(sentence)
  return tuple(out)


def _in_heldout_pool(conversation_id: str) -> bool:
  """kvp_jax.samples.sources.in_pool(id, "heldout"), restated: sources is
  not imported, so that it may register these tasks without an import
  cycle (tests/samples/test_ruler_ood.py checks that the two agree)."""
  return zlib.crc32(conversation_id.encode()) % 100 < HELDOUT_PERCENT


@functools.lru_cache(maxsize=1)
def heldout_conversation_ids() -> frozenset[str]:
  """Ids of the held-out pool's conversations (cached)."""
  return frozenset(c.id for c in dialogues.load_conversations()
                   if _in_heldout_pool(c.id))


@functools.lru_cache(maxsize=1)
def _dialogue_text() -> tuple[tuple[str, ...], tuple[int, ...]]:
  """(lines, conversation starts): the turns of the held-out conversations
  with no turn over MAX_TURN_CHARS, in id order, a blank line after each
  conversation."""
  ids = heldout_conversation_ids()
  lines: list[str] = []
  starts: list[int] = []
  for conversation in dialogues.load_conversations():
    turns = [line.rstrip("\n")
             for line in dialogues.transcript_lines(conversation)]
    if conversation.id in ids and max(map(len, turns)) <= MAX_TURN_CHARS:
      starts.append(len(lines))
      lines.extend(turns)
      lines.append("")
  return tuple(lines), tuple(starts)


def dialogue_lines() -> tuple[str, ...]:
  """Every line of the dialogue haystack ("A: text" turns and blank lines)."""
  return _dialogue_text()[0]


def _cycle(items: Sequence[str], n: int, start: int) -> list[str]:
  return [items[(start + i) % len(items)] for i in range(n)]


def _haystack(index: int, rng: random.Random
              ) -> tuple[str, Callable[[int], list[str]], str]:
  """(name, units(n), joiner) of sample `index`'s haystack; a seeded start."""
  name = HAYSTACKS[index % len(HAYSTACKS)]
  if name == DIALOGUE_HAYSTACK:
    lines, starts = _dialogue_text()
    start = rng.choice(starts)
    return name, lambda n: _cycle(lines, n, start), "\n"
  sentences = reference_sentences()
  start = rng.randrange(len(sentences))
  return name, lambda n: _cycle(sentences, n, start), " "


# --------------------------------------------------------------- helpers


def random_key(rng: random.Random) -> str:
  """A uniformly random "First Surname" key."""
  return f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"


def random_value(kind: str, rng: random.Random) -> str:
  """A value of a kind: "codes", "numbers", "uuids" or "words"."""
  if kind == "codes":
    return (f"{rng.choice(_LETTERS)}{rng.choice(_LETTERS)}-"
            f"{rng.randint(1000, 9999)}")
  if kind == "numbers":
    digits = rng.choice(_NUMBER_DIGITS)
    return str(rng.randint(10**(digits - 1), 10**digits - 1))
  if kind == "uuids":
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
  if kind == "words":
    return rng.choice(VALUE_WORDS)
  raise ValueError(f"unknown value type {kind!r}")


def _distinct(draw: Callable[[], str], count: int) -> list[str]:
  """`count` draws, none equal to or contained in another (so that string
  matching cannot credit one for another)."""
  out: list[str] = []
  while len(out) < count:
    item = draw()
    if not any(item in other or other in item for other in out):
      out.append(item)
  return out


def _join_and(items: Sequence[str]) -> str:
  if len(items) <= 2:
    return " and ".join(items)
  return ", ".join(items[:-1]) + ", and " + items[-1]


def _insert_at_depths(units: Sequence[str], items: Sequence[str],
                      depths: Sequence[float]) -> list[str]:
  """Inserts items[i] at depths[i] percent of `units` (depths ascending)."""
  out = list(units)
  for offset, (depth, item) in enumerate(zip(depths, items)):
    out.insert(int(len(units) * depth / 100) + offset, item)
  return out


@dataclasses.dataclass(frozen=True)
class _Plan:
  """A sample with its random choices made: the haystack items to insert
  (in order), their depths, what surrounds the haystack, the answers."""
  intro: str
  items: list[str]
  question: str
  answer_prefix: str
  answers: list[str]
  metadata: dict


# ----------------------------------------------------------------- plans


def _needle_plan(config: NeedleConfig, rng: random.Random) -> _Plan:
  if config.num_queries > config.num_keys:
    raise ValueError("num_queries must not exceed num_keys")
  attr, attrs = rng.choice(ATTRIBUTES[config.value_type])
  keys = _distinct(lambda: random_key(rng), config.num_keys)
  flat = _distinct(lambda: random_value(config.value_type, rng),
                   config.num_keys * config.num_values)
  values = [flat[i * config.num_values:(i + 1) * config.num_values]
            for i in range(config.num_keys)]
  needles = [rng.choice(NEEDLE_TEMPLATES).format(key=key, attr=attr,
                                                 value=value)
             for key, key_values in zip(keys, values) for value in key_values]
  rng.shuffle(needles)
  queried = rng.sample(range(config.num_keys), config.num_queries)
  query = _join_and([keys[i] for i in queried])
  if config.num_queries * config.num_values == 1:
    question, prefix = rng.choice(QUESTION_TEMPLATES)
  else:
    question, prefix = rng.choice(PLURAL_QUESTION_TEMPLATES)
  fields = dict(attr=attr, attrs=attrs, key=query, keys=query)
  return _Plan(
      intro=rng.choice(INTRO_TEMPLATES).format(attrs=attrs), items=needles,
      question=question.format(**fields), answer_prefix=prefix.format(**fields),
      answers=[v for i in queried for v in values[i]],
      metadata={"keys": keys, "queries": [keys[i] for i in queried],
                "attribute": attr})


def _register_names(rng: random.Random, count: int) -> list[str]:
  """Distinct names of 4 lower-case letters and 2 digits ("qvxa17")."""
  return _distinct(lambda: "".join(rng.choices(string.ascii_lowercase, k=4))
                   + f"{rng.randrange(100):02d}", count)


def _chain(names: Sequence[str], value: str, rng: random.Random) -> list[str]:
  """The statements of one chain: load names[0], then copy down the list."""
  first = rng.choice(VT_INIT_TEMPLATES).format(a=names[0], value=value)
  return [first] + [rng.choice(VT_COPY_TEMPLATES).format(a=a, b=b)
                    for a, b in zip(names, names[1:])]


def _tracking_plan(config: TrackingConfig, rng: random.Random) -> _Plan:
  size = config.num_hops + 1
  names = _register_names(rng, config.num_chains * size + config.example_hops
                          + 1)
  values = _distinct(lambda: random_value("numbers", rng),
                     config.num_chains + 1)
  chains = [_chain(names[c * size:(c + 1) * size], values[c], rng)
            for c in range(config.num_chains)]
  # Interleave the chains, each in its own order.
  owners = [c for c in range(config.num_chains) for _ in range(size)]
  rng.shuffle(owners)
  next_of = [0] * config.num_chains
  items = []
  for c in owners:
    items.append(chains[c][next_of[c]])
    next_of[c] += 1
  example_names = names[config.num_chains * size:]
  example = " ".join(_chain(example_names, values[-1], rng))
  example_qa = (VT_QUESTION.format(value=values[-1]) + VT_ANSWER_PREFIX.format(
      value=values[-1]) + " " + ", ".join(example_names) + ".")
  return _Plan(
      intro=f"Example: {example}\n{example_qa}\n\n{VT_INTRO}", items=items,
      question=VT_QUESTION.format(value=values[0]),
      answer_prefix=VT_ANSWER_PREFIX.format(value=values[0]),
      answers=names[:size],
      metadata={"value": values[0], "chains": chains})


def _collect_plan(config: CollectConfig, rng: random.Random) -> _Plan:
  item, other = rng.choice(COLLECT_ITEMS)
  codes = _distinct(lambda: random_value("codes", rng),
                    config.num_items + config.num_distractors)
  records = [(item, code) for code in codes[:config.num_items]] + [
      (other, code) for code in codes[config.num_items:]]
  rng.shuffle(records)
  items = [rng.choice(COLLECT_TEMPLATES).format(item=kind, value=code)
           for kind, code in records]
  return _Plan(
      intro=COLLECT_INTRO.format(items=f"{item}s, {other}s", item=item),
      items=items, question=COLLECT_QUESTION.format(item=item),
      answer_prefix=COLLECT_ANSWER_PREFIX.format(item=item),
      answers=codes[:config.num_items],
      metadata={"item": item, "distractor_item": other,
                "distractors": codes[config.num_items:]})


_PLANNERS = {
    NeedleConfig: _needle_plan,
    TrackingConfig: _tracking_plan,
    CollectConfig: _collect_plan,
}

# ---------------------------------------------------------------- driver


def generate_sample(task: str, index: int, target_length: int,
                    tokenizer: samples_lib.TokenizerLike,
                    seed: int) -> samples_lib.Sample:
  """Sample `index` of an ood task, fitted under `target_length` tokens.

  Raises:
    ValueError: unknown task, or a target too short for the task's prompt.
  """
  spec = task_spec(task)
  rng = random.Random(f"{task}|{target_length}|{seed}|{index}")
  plan = _PLANNERS[type(spec.config)](spec.config, rng)
  depths = sorted(rng.sample(DEPTHS, len(plan.items)))
  haystack, units, joiner = _haystack(index, rng)
  budget = target_length - samples_lib.BOS_TOKENS - spec.max_new_tokens

  def build(n: int) -> tuple[str, str, str]:
    text = joiner.join(_insert_at_depths(units(n), plan.items, depths))
    return f"{plan.intro}\n\n{text}", plan.question, plan.answer_prefix

  def length(n: int) -> int:
    return samples_lib.count_tokens(
        tokenizer, samples_lib.prompt_text(ruler.sample_from_parts(build(n))))

  try:
    n = samples_lib.fit_count(length, budget, budget)
  except ValueError as e:
    raise ValueError(f"{task} does not fit in {target_length} tokens: "
                     f"{e}") from None
  metadata = dict(plan.metadata)
  metadata.update(
      family="ood", haystack=haystack, depths=depths, needles=plan.items,
      metric=spec.metric, target_length=target_length, num_units=n,
      num_tokens=samples_lib.BOS_TOKENS + length(n) + spec.max_new_tokens)
  return ruler.sample_from_parts(
      build(n), id=f"{task}-{target_length}-{seed}-{index}", task=task,
      answers=list(plan.answers), max_new_tokens=spec.max_new_tokens,
      metadata=metadata)


def stray_answers(sample: samples_lib.Sample) -> list[str]:
  """Answers that the haystack holds outside the planted items (ignoring
  case): [] for a sample whose answers only the needles give."""
  rest = sample.context.lower()
  for item in sample.metadata["needles"]:
    rest = rest.replace(item.lower(), "", 1)
  return [answer for answer in sample.answers if answer.lower() in rest]


def generate_task(task: str, num_samples: int, target_length: int,
                  tokenizer: samples_lib.TokenizerLike,
                  seed: int) -> list[samples_lib.Sample]:
  """`num_samples` samples of an ood task, deterministic in `seed`."""
  task_spec(task)
  return [generate_sample(task, index, target_length, tokenizer, seed)
          for index in range(num_samples)]
