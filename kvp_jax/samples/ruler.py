"""RULER-style synthetic tasks, generated offline and seeded.

Tasks (after RULER, Hsieh et al. 2024):
  niah_single_1    noise haystack, one word key, a 7-digit number value
  niah_single_2    essay haystack, number value
  niah_single_3    essay haystack, UUID value
  niah_multikey_1  essay haystack, 4 keys, one asked about
  niah_multikey_2  a haystack of needles (word keys, number values)
  niah_multikey_3  a haystack of needles (UUID keys, UUID values)
  niah_multivalue  essay haystack, one key with 4 values
  niah_multiquery  essay haystack, 4 keys all asked about
  vt               variable tracking: a 4-hop chain of assignments in noise
  cwe              common words: the 10 most frequent words of a numbered list
  fwe              frequent words: the 3 most frequent coded words of a
                   Zipf-distributed text

Prompts follow RULER's base-model style: the context (instructions and
haystack), a question, then an answer prefix the model continues. Needles
sit at RULER's depths (40 points from 0% to 100% of the haystack units, one
distinct depth per needle); an essay haystack starts at a seeded sentence of
the essay and cycles through it when longer. Each sample
is fitted under its target length (BOS + prompt tokens + the task's
max_new_tokens) by a search over the number of haystack units, measured with
the tokenizer given. Sample `index` of (task, target_length, seed) depends on
nothing else, so generating more samples never changes the earlier ones.
"""

from __future__ import annotations

import dataclasses
import random
import string
import types
import uuid
from typing import Callable, Mapping, Sequence

from kvp_jax.samples import haystacks
from kvp_jax.samples import schema as samples_lib
from kvp_jax.samples import metrics
from kvp_jax.samples import words

NEEDLE = "One of the special magic {kind} for {key} is: {value}."
# RULER's needle depths: 40 points from 0% to 100% of the haystack.
DEPTHS = tuple(int(round(100 * i / 39)) for i in range(40))
_SINGULAR = {"numbers": "number", "words": "word", "uuids": "uuid"}
NOISE_HAYSTACK = "noise"
ESSAY_HAYSTACK = "essay"
NEEDLE_HAYSTACK = "needle"


@dataclasses.dataclass(frozen=True)
class NiahConfig:
  """A needle-in-a-haystack variant.

  Attributes:
    haystack: "noise", "essay" or "needle" (distractor needles).
    key_type / value_type: "words", "numbers" or "uuids".
    num_keys: needles' keys in the haystack.
    num_values: values per key.
    num_queries: keys asked about (<= num_keys).
  """
  haystack: str
  key_type: str = "words"
  value_type: str = "numbers"
  num_keys: int = 1
  num_values: int = 1
  num_queries: int = 1


@dataclasses.dataclass(frozen=True)
class VariableTrackingConfig:
  """Chains "VAR B = VAR A" hidden in noise; name every variable of chain 0."""
  num_chains: int = 1
  num_hops: int = 4
  example_noise_units: int = 5


@dataclasses.dataclass(frozen=True)
class CommonWordsConfig:
  """A numbered word list where `num_common` words repeat more often.

  Below `short_below` target tokens the frequencies are (short_common_freq,
  short_uncommon_freq), as in RULER, so that short lists still hold enough
  distinct words.
  """
  num_common: int = 10
  common_freq: int = 30
  uncommon_freq: int = 3
  short_common_freq: int = 6
  short_uncommon_freq: int = 1
  short_below: int = 4096


@dataclasses.dataclass(frozen=True)
class FrequentWordsConfig:
  """Coded words with Zipf(alpha) counts; the top one is the noise "...".

  The vocabulary has target_length // tokens_per_vocab_word coded words of
  `word_length` letters; the answers are the `num_answers` most frequent
  after the noise word.
  """
  alpha: float = 2.0
  word_length: int = 6
  tokens_per_vocab_word: int = 50
  num_answers: int = 3


TaskConfig = (NiahConfig | VariableTrackingConfig | CommonWordsConfig |
              FrequentWordsConfig)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """A registered task: its generator's config, tokens to generate, metric."""
  name: str
  config: TaskConfig
  max_new_tokens: int
  metric: str = metrics.STRING_MATCH_ALL


TASKS: Mapping[str, TaskSpec] = types.MappingProxyType({
    spec.name: spec for spec in (
        TaskSpec("niah_single_1", NiahConfig(NOISE_HAYSTACK), 128),
        TaskSpec("niah_single_2", NiahConfig(ESSAY_HAYSTACK), 128),
        TaskSpec("niah_single_3",
                 NiahConfig(ESSAY_HAYSTACK, value_type="uuids"), 128),
        TaskSpec("niah_multikey_1",
                 NiahConfig(ESSAY_HAYSTACK, num_keys=4), 128),
        TaskSpec("niah_multikey_2", NiahConfig(NEEDLE_HAYSTACK), 128),
        TaskSpec("niah_multikey_3",
                 NiahConfig(NEEDLE_HAYSTACK, key_type="uuids",
                            value_type="uuids"), 128),
        TaskSpec("niah_multivalue",
                 NiahConfig(ESSAY_HAYSTACK, num_values=4), 128),
        TaskSpec("niah_multiquery",
                 NiahConfig(ESSAY_HAYSTACK, num_keys=4, num_queries=4), 128),
        TaskSpec("vt", VariableTrackingConfig(), 30),
        TaskSpec("cwe", CommonWordsConfig(), 120),
        TaskSpec("fwe", FrequentWordsConfig(), 50),
    )
})


def task_names() -> list[str]:
  """Registered task names, in registry order."""
  return list(TASKS)


def task_spec(task: str) -> TaskSpec:
  """The spec of a registered task; ValueError naming the known ones."""
  if task not in TASKS:
    raise ValueError(f"unknown task {task!r}; known tasks: "
                     f"{', '.join(TASKS)}")
  return TASKS[task]


@dataclasses.dataclass(frozen=True)
class _Plan:
  """A sample with its random choices made and its haystack size open.

  build(n) gives (context, question, answer_prefix) for n haystack units,
  n in [0, upper]; validate(n), when given, raises ValueError if the fitted n
  makes a flawed sample.
  """
  build: Callable[[int], tuple[str, str, str]]
  answers: list[str]
  upper: int
  metadata: dict
  validate: Callable[[int], None] | None = None


# ----------------------------------------------------------------- helpers


def _random_value(kind: str, rng: random.Random) -> str:
  if kind == "numbers":
    return str(rng.randint(10**6, 10**7 - 1))
  if kind == "uuids":
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
  if kind == "words":
    return words.random_key_word(rng)
  raise ValueError(f"unknown needle type {kind!r}")


def _distinct_values(kind: str, rng: random.Random, count: int) -> list[str]:
  out: list[str] = []
  seen: set[str] = set()
  while len(out) < count:
    value = _random_value(kind, rng)
    if value not in seen:
      seen.add(value)
      out.append(value)
  return out


def _join_and(items: Sequence[str]) -> str:
  if len(items) == 1:
    return items[0]
  return ", ".join(items[:-1]) + ", and " + items[-1]


def _insert_at_depths(units: Sequence[str], items: Sequence[str],
                      depths: Sequence[float]) -> list[str]:
  """Inserts items[i] at depths[i] percent of `units` (depths ascending)."""
  out = list(units)
  for offset, (depth, item) in enumerate(zip(depths, items)):
    out.insert(int(len(units) * depth / 100) + offset, item)
  return out


class _DistractorNeedles:
  """A lazily grown, seeded stream of needles with fresh keys."""

  def __init__(self, config: NiahConfig, rng: random.Random,
               taken_keys: set[str], taken_values: set[str]):
    self._config = config
    self._rng = random.Random(rng.getrandbits(64))
    self._keys = set(taken_keys)
    self._real_keys = frozenset(taken_keys)
    self._values = frozenset(taken_values)
    self._needles: list[str] = []

  def _key(self) -> str:
    pool = {"words": words.num_keys(), "numbers": 9 * 10**6}.get(
        self._config.key_type, 2**122)
    while True:
      key = _random_value(self._config.key_type, self._rng)
      if key in self._real_keys:
        continue
      if key not in self._keys or len(self._keys) > 0.9 * pool:
        self._keys.add(key)
        return key

  def take(self, n: int) -> list[str]:
    while len(self._needles) < n:
      value = _random_value(self._config.value_type, self._rng)
      if value in self._values:
        continue
      self._needles.append(NEEDLE.format(
          kind=self._config.value_type, key=self._key(), value=value))
    return self._needles[:n]


# -------------------------------------------------------------------- niah


def _niah_plan(config: NiahConfig, rng: random.Random, budget: int,
               target_length: int) -> _Plan:
  del target_length
  if config.num_queries > config.num_keys:
    raise ValueError("num_queries must not exceed num_keys")
  kind = config.value_type
  keys = _distinct_values(config.key_type, rng, config.num_keys)
  flat_values = _distinct_values(kind, rng,
                                 config.num_keys * config.num_values)
  values = [flat_values[i * config.num_values:(i + 1) * config.num_values]
            for i in range(config.num_keys)]
  needles = [NEEDLE.format(kind=kind, key=key, value=value)
             for key, key_values in zip(keys, values) for value in key_values]
  rng.shuffle(needles)
  depths = sorted(rng.sample(DEPTHS, len(needles)))
  queried = rng.sample(range(config.num_keys), config.num_queries)
  answers = [value for i in queried for value in values[i]]
  query = _join_and([keys[i] for i in queried])

  if config.num_queries * config.num_values == 1:
    one = _SINGULAR[kind]
    intro = (f"A special magic {one} is hidden within the following text. "
             f"Make sure to memorize it. I will quiz you about the {one} "
             f"afterwards.")
    question = (f"What is the special magic {one} for {query} mentioned in "
                f"the provided text?")
    answer_prefix = (f" The special magic {one} for {query} mentioned in the "
                     f"provided text is")
  else:
    intro = (f"Some special magic {kind} are hidden within the following "
             f"text. Make sure to memorize it. I will quiz you about the "
             f"{kind} afterwards.")
    question = (f"What are all the special magic {kind} for {query} "
                f"mentioned in the provided text?")
    answer_prefix = (f" The special magic {kind} for {query} mentioned in "
                     f"the provided text are")

  if config.haystack == NOISE_HAYSTACK:
    units, joiner = haystacks.noise_units, "\n"
  elif config.haystack == ESSAY_HAYSTACK:
    start = rng.randrange(len(haystacks.essay_sentences()))
    units, joiner = (lambda n: haystacks.essay_units(n, start)), " "
  elif config.haystack == NEEDLE_HAYSTACK:
    units, joiner = _DistractorNeedles(config, rng, set(keys),
                                       set(flat_values)).take, "\n"
  else:
    raise ValueError(f"unknown haystack {config.haystack!r}")

  def build(n: int) -> tuple[str, str, str]:
    haystack = joiner.join(_insert_at_depths(units(n), needles, depths))
    return f"{intro}\n{haystack}", question, answer_prefix

  return _Plan(build=build, answers=answers, upper=budget,
               metadata={"depths": depths, "keys": keys,
                         "queries": [keys[i] for i in queried],
                         "haystack": config.haystack})


# ---------------------------------------------------------------------- vt

_VT_INTRO = ("Memorize and track the chain(s) of variable assignment hidden "
             "in the following text.")


def _variable_names(rng: random.Random, count: int) -> list[str]:
  names: list[str] = []
  while len(names) < count:
    name = "".join(rng.choices(string.ascii_uppercase, k=5))
    if name not in names:
      names.append(name)
  return names


def _vt_prompt(noise: int, chains: Sequence[Sequence[str]],
               fractions: Sequence[Sequence[float]], value: str,
               num_vars: int) -> tuple[str, str, str]:
  """(context, question, answer prefix) of one variable-tracking prompt."""
  units = haystacks.noise_units(noise)
  placed = sorted(
      (int(fraction * (noise + 1)), c, hop, statement)
      for c, (chain, chain_fractions) in enumerate(zip(chains, fractions))
      for hop, (statement, fraction) in enumerate(zip(chain, chain_fractions)))
  lines: list[str] = []
  cursor = 0
  for position, _, _, statement in placed:
    lines.extend(units[cursor:position])
    cursor = max(cursor, position)
    lines.append(statement)
  lines.extend(units[cursor:])
  context = f"{_VT_INTRO}\n\n" + "\n".join(lines)
  question = (f"Question: Find all variables that are assigned the value "
              f"{value} in the text above.")
  answer_prefix = (f" Answer: According to the chain(s) of variable "
                   f"assignment in the text above, {num_vars} variables are "
                   f"assigned the value {value}, they are:")
  return context, question, answer_prefix


def _vt_plan(config: VariableTrackingConfig, rng: random.Random, budget: int,
             target_length: int) -> _Plan:
  del target_length
  hops = config.num_hops
  num_chains = config.num_chains + 1  # the last chain is the worked example
  names = _variable_names(rng, num_chains * (hops + 1))
  values: list[str] = []
  while len(values) < num_chains:
    value = str(rng.randint(10000, 99999))
    if value not in values:
      values.append(value)
  chains, variables = [], []
  for c in range(num_chains):
    chain_vars = names[c * (hops + 1):(c + 1) * (hops + 1)]
    variables.append(chain_vars)
    chains.append([f"VAR {chain_vars[0]} = {values[c]}"] + [
        f"VAR {chain_vars[h + 1]} = VAR {chain_vars[h]}" for h in range(hops)])
  fractions = [sorted(rng.random() for _ in range(hops + 1))
               for _ in range(num_chains)]
  example = _vt_prompt(config.example_noise_units, chains[-1:],
                       fractions[-1:], values[-1], hops + 1)
  example_text = samples_lib.prompt_text(sample_from_parts(example)) + " " + (
      " ".join(variables[-1]))

  def build(n: int) -> tuple[str, str, str]:
    context, question, answer_prefix = _vt_prompt(
        n, chains[:-1], fractions[:-1], values[0], hops + 1)
    return f"{example_text}\n\n{context}", question, answer_prefix

  return _Plan(build=build, answers=list(variables[0]), upper=budget,
               metadata={"value": values[0], "chains": chains[:-1]})


# --------------------------------------------------------------------- cwe

_CWE_INTRO = ("Below is a numbered list of words. In these words, some appear "
              "more often than others. Memorize the ones that appear most "
              "often.")


def _numbered(items: Sequence[str]) -> str:
  return " ".join(f"{i + 1}. {item}" for i, item in enumerate(items))


def _word_list(common: Sequence[str], uncommon: Sequence[str],
               common_freq: int, uncommon_freq: int, seed: int) -> list[str]:
  items = list(common) * common_freq + list(uncommon) * uncommon_freq
  random.Random(seed).shuffle(items)
  return items


def _cwe_plan(config: CommonWordsConfig, rng: random.Random, budget: int,
              target_length: int) -> _Plan:
  if target_length < config.short_below:
    freq = (config.short_common_freq, config.short_uncommon_freq)
    example_freq, example_size = (3, 1), 20
  else:
    freq = (config.common_freq, config.uncommon_freq)
    example_freq, example_size = (10, 3), 40
  vocabulary = words.english_vocabulary()
  order = rng.sample(vocabulary, len(vocabulary))
  k = config.num_common
  question = (f"Question: What are the {k} most common words in the above "
              f"list?")
  answer_prefix = (f" Answer: The top {k} words that appear most often in "
                   f"the list are:")
  example_words = order[-example_size:]
  example_list = _word_list(example_words[:k], example_words[k:],
                            *example_freq, rng.getrandbits(64))
  example = (f"{_CWE_INTRO}\n{_numbered(example_list)}\n{question}"
             f"{answer_prefix} {_numbered(example_words[:k])}")
  common = order[:k]
  shuffle_seed = rng.getrandbits(64)

  def build(n: int) -> tuple[str, str, str]:
    items = _word_list(common, order[k:k + n], *freq, shuffle_seed)
    context = f"{example}\n{_CWE_INTRO}\n{_numbered(items)}"
    return context, question, answer_prefix

  return _Plan(build=build, answers=list(common),
               upper=len(vocabulary) - k - example_size,
               metadata={"frequencies": list(freq)})


# --------------------------------------------------------------------- fwe


def _zeta(alpha: float, terms: int = 100) -> float:
  """Riemann zeta(alpha) for alpha > 1 (Euler-Maclaurin tail)."""
  head = sum(k ** -alpha for k in range(1, terms))
  return head + terms ** (1 - alpha) / (alpha - 1) + terms ** -alpha / 2 + (
      alpha * terms ** (-alpha - 1) / 12)


def _fwe_plan(config: FrequentWordsConfig, rng: random.Random, budget: int,
              target_length: int) -> _Plan:
  vocab_size = max(target_length // config.tokens_per_vocab_word,
                   config.num_answers + 2)
  coded: list[str] = []
  seen: set[str] = set()
  while len(coded) < vocab_size:
    word = "".join(rng.choices(string.ascii_lowercase, k=config.word_length))
    if word not in seen:
      seen.add(word)
      coded.append(word)
  coded[0] = "..."  # the most frequent word is noise
  zeta = _zeta(config.alpha)
  weights = [k ** -config.alpha / zeta for k in range(1, vocab_size + 1)]
  shuffle_seed = rng.getrandbits(64)
  answers = coded[1:1 + config.num_answers]

  def counts(n: int) -> list[int]:
    return [int(n * weight) for weight in weights]

  def build(n: int) -> tuple[str, str, str]:
    items = [word for word, c in zip(coded, counts(n)) for _ in range(c)]
    random.Random(shuffle_seed).shuffle(items)
    context = ("Read the following coded text and track the frequency of "
               "each coded word. Find the three most frequently appeared "
               "coded words. " + " ".join(items))
    question = ("Question: Do not provide any explanation. Please ignore the "
                "dots '....'. What are the three most frequently appeared "
                "words in the above coded text?")
    answer_prefix = (" Answer: According to the coded text above, the three "
                     "most frequently appeared words are:")
    return context, question, answer_prefix

  def check(n: int) -> None:
    c = counts(n)
    if c[config.num_answers] <= c[config.num_answers + 1]:
      raise ValueError(f"target length {target_length} is too short for fwe: "
                       f"the answers would tie with other words")

  return _Plan(build=build, answers=answers, upper=2 * budget,
               metadata={"vocab_size": vocab_size}, validate=check)


# ------------------------------------------------------------------ driver

_PLANNERS = {
    NiahConfig: _niah_plan,
    VariableTrackingConfig: _vt_plan,
    CommonWordsConfig: _cwe_plan,
    FrequentWordsConfig: _fwe_plan,
}


def sample_from_parts(parts: tuple[str, str, str],
                      **fields) -> samples_lib.Sample:
  """A Sample of (context, question, answer prefix) and other fields
  (placeholders for those not given: a plan's text measured while fitted)."""
  context, question, answer_prefix = parts
  defaults = dict(id="-", task="-", answers=["-"], max_new_tokens=0)
  defaults.update(fields)
  return samples_lib.Sample(context=context, question=question,
                            answer_prefix=answer_prefix, **defaults)


def generate_sample(task: str, index: int, target_length: int,
                    tokenizer: samples_lib.TokenizerLike,
                    seed: int) -> samples_lib.Sample:
  """Sample `index` of a task, fitted under `target_length` tokens.

  Raises:
    ValueError: unknown task, or a target too short for the task's prompt.
  """
  spec = task_spec(task)
  rng = random.Random(f"{task}|{target_length}|{seed}|{index}")
  budget = target_length - samples_lib.BOS_TOKENS - spec.max_new_tokens
  plan = _PLANNERS[type(spec.config)](spec.config, rng, budget, target_length)

  def length(n: int) -> int:
    return samples_lib.count_tokens(
        tokenizer, samples_lib.prompt_text(sample_from_parts(plan.build(n))))

  try:
    n = samples_lib.fit_count(length, budget, plan.upper)
  except ValueError as e:
    raise ValueError(f"{task} does not fit in {target_length} tokens: "
                     f"{e}") from None
  if plan.validate is not None:
    plan.validate(n)
  metadata = dict(plan.metadata)
  metadata.update(metric=spec.metric, target_length=target_length,
                  num_tokens=samples_lib.BOS_TOKENS + length(n) +
                  spec.max_new_tokens, num_units=n)
  return sample_from_parts(plan.build(n), id=f"{task}-{target_length}-{seed}-{index}",
                    task=task, answers=list(plan.answers),
                    max_new_tokens=spec.max_new_tokens, metadata=metadata)


def generate_task(task: str, num_samples: int, target_length: int,
                  tokenizer: samples_lib.TokenizerLike,
                  seed: int) -> list[samples_lib.Sample]:
  """`num_samples` samples of a registered task, deterministic in `seed`."""
  task_spec(task)
  return [generate_sample(task, index, target_length, tokenizer, seed)
          for index in range(num_samples)]
