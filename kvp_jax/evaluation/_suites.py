"""Suite kinds: which samples a suite holds, how they are prompted, and how a
batch of them is evaluated. Each kind is a module of this package that
registers a `SuiteKind` subclass, as scorers register themselves:

  ruler           _ruler_suite: greedy answers scored as RULER scores them
  perplexity      _perplexity_suite: reference continuations' perplexity
  attention_cost  _attention_cost_suite: normalised future-attention cost
  episodic        _episodic_suite: long-conversation QA, EpiCache
  long_text       _long_text_suite: perplexity and agreement on long
                  natural text, read with chunked prefill

A suite in a config is a mapping with a `kind` (SuiteConfig lists its
fields). Sources are those of kvp_jax.samples.sources (ruler, dialogues,
documents, jsonl); use seeds and pools that the training traces did not.
Adding a kind is one new module with a registered SuiteKind, imported by
kvp_jax/evaluation/__init__.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence, TYPE_CHECKING

from kvp_jax import samples as samples_lib
from kvp_jax.samples import sources as sources_lib

if TYPE_CHECKING:
  import jax
  from kvp_jax.evaluation._grid import Evaluated, Grid
  from kvp_jax.evaluation._log import SampleLog
  from kvp_jax.model import Pretrained


@dataclasses.dataclass(frozen=True)
class Item:
  """One prepared sample.

  group: what results are averaged over, e.g. "niah_single_1@2048".
  prompt: token ids (BOS first) the model reads.
  continuation: reference ids to score (perplexity suites).
  max_new_tokens: tokens to generate (ruler, attention_cost).
  """
  sample: samples_lib.Sample
  group: str
  prompt: tuple[int, ...]
  continuation: tuple[int, ...] | None
  max_new_tokens: int


@dataclasses.dataclass(frozen=True)
class SuiteRun:
  """What a suite kind's `run` works with: the model, the grid, the suite's
  name and settings, the sample log, the grid's PRNG key and every item of
  the suite (a batch holds some)."""
  model: Pretrained
  grid: Grid
  suite: str
  settings: Mapping[str, Any]
  log: SampleLog
  rng: jax.Array
  items: Sequence[Item] = ()

  def pending(self, cells: Sequence[Evaluated], batch: Sequence[Item],
              metrics: Sequence[str]) -> list[Evaluated]:
    """The cells some sample of the batch still lacks, for some metric."""
    ids = [i.sample.id for i in batch]
    return [c for c in cells if not self.log.has_all(c.cell, ids, metrics)]


class SuiteKind:
  """A kind of suite. Subclasses set `kind` and implement `run`; the
  defaults prompt each sample with its context and question and give it the
  suite's (or the task's) max_new_tokens."""
  kind: ClassVar[str] = ""

  def samples(self, suite: Mapping[str, Any], samples: list,
              tokenizer) -> list[samples_lib.Sample]:
    """The suite's samples, given those its sources built."""
    del suite, tokenizer
    return samples

  def item(self, suite: Mapping[str, Any], sample: samples_lib.Sample,
           prompt: Sequence[int], tokenizer) -> Item:
    del tokenizer
    budget = suite.get("max_new_tokens")
    if isinstance(budget, Mapping):
      n = int(budget.get(sample.task, sample.max_new_tokens))
    else:
      n = int(budget or sample.max_new_tokens)
    return Item(sample, group_of(sample), tuple(prompt), None, n)

  def batches(self, items: Sequence[Item], size: int):
    """Items grouped into batches of similar prompt length."""
    order = sorted(range(len(items)), key=lambda i: (len(items[i].prompt), i))
    for start in range(0, len(order), size):
      yield [items[i] for i in order[start:start + size]]

  def run(self, run: SuiteRun, batch: Sequence[Item]) -> None:
    """Evaluates every pending cell on the batch, logging its rows."""
    raise NotImplementedError


_KINDS: dict[str, SuiteKind] = {}


def register(cls: type[SuiteKind]) -> type[SuiteKind]:
  """Registers a SuiteKind under its `kind` (a class decorator)."""
  if not cls.kind:
    raise ValueError(f"{cls!r} has no kind")
  known = _KINDS.get(cls.kind)
  if known is not None and type(known) is not cls:
    raise ValueError(f"a suite kind {cls.kind!r} is already registered")
  _KINDS[cls.kind] = cls()
  return cls


def kinds() -> tuple[str, ...]:
  """The registered suite kinds, in registration order."""
  return tuple(_KINDS)


def get_kind(kind: str) -> SuiteKind:
  try:
    return _KINDS[kind]
  except KeyError:
    raise ValueError(f"unknown suite kind {kind!r}; known: {kinds()}") \
        from None


def suite_name(suite: Mapping[str, Any], index: int) -> str:
  return str(suite.get("name") or f"{suite['kind']}{index}")


def group_of(sample: samples_lib.Sample) -> str:
  """The group a sample's results are averaged over: its task, and its
  target length when it has one ("niah_single_1@2048")."""
  target = sample.metadata.get("target_length")
  return f"{sample.task}@{target}" if target else sample.task


def text_file_samples(paths: Sequence[str], tokenizer, context_tokens: int,
                      continuation_tokens: int) -> list[samples_lib.Sample]:
  """One sample per text file: its first context_tokens tokens as the
  context, the next continuation_tokens as the reference continuation."""
  out = []
  for path in paths:
    path = Path(path)
    if not path.is_file():
      raise FileNotFoundError(f"text file not found: {path}")
    ids = tokenizer.encode(path.read_text(encoding="utf-8"))
    need = context_tokens + continuation_tokens
    if len(ids) < need:
      raise ValueError(f"{path} has {len(ids)} tokens; the suite needs "
                       f"{need} (context_tokens + continuation_tokens)")
    out.append(samples_lib.Sample(
        id=f"file:{path}", task=f"file:{path.name}",
        context=tokenizer.decode(ids[:context_tokens]), question="",
        answer_prefix="", answers=[], max_new_tokens=continuation_tokens,
        continuation=tokenizer.decode(ids[context_tokens:need]),
        metadata={"target_length": need}))
  return out


def build_suite(suite: Mapping[str, Any], tokenizer) -> list[Item]:
  """The suite's prepared items, in a deterministic order.

  Raises ValueError for an unknown kind or a sample the kind cannot use.
  """
  kind = get_kind(suite.get("kind"))
  samples = sources_lib.build_samples(list(suite.get("sources", [])),
                                      tokenizer)
  samples = kind.samples(suite, samples, tokenizer)
  if not samples:
    raise ValueError(f"suite {suite.get('name', suite.get('kind'))!r} has no "
                     "samples")
  prompts = tokenizer.encode_batch(
      [samples_lib.prompt_text(s) for s in samples], add_bos=True)
  return [kind.item(suite, sample, prompt, tokenizer)
          for sample, prompt in zip(samples, prompts)]
