"""The sample record every generator writes, its prompt, its length, JSONL.

A sample is one model input: `prompt_text(sample)` is what the model reads
(after a BOS token), then it either generates up to `max_new_tokens` tokens
that are scored against `answers`, or it is scored by the likelihood of the
reference `continuation` (dialogues, documents), which follows the prompt
text directly.

Length accounting: a sample's length is BOS + the prompt's tokens +
`max_new_tokens` (for continuation samples, `max_new_tokens` is the number of
continuation tokens), and generators fit it just under a target length by a
binary search over the number of haystack units (`fit_count`), measuring with
the real tokenizer.

JSONL files hold one JSON object per line with the fields of `Sample`;
`read_samples` rejects a malformed record with a `SampleError` that names the
file and the line.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

from kvp_jax import _files

BOS_TOKENS = 1


class TokenizerLike(Protocol):
  """What generators need of a tokenizer: `encode` (and optionally `count`)."""

  def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
    ...


class SampleError(ValueError):
  """A malformed sample record, located by file and line when read from one."""

  def __init__(self, message: str, path: str | os.PathLike[str] | None = None,
               line: int | None = None):
    self.message = message
    self.path = None if path is None else str(path)
    self.line = line
    where = ""
    if self.path is not None:
      where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
    super().__init__(where + message)


@dataclasses.dataclass(frozen=True)
class Sample:
  """One model input and what it is scored against.

  Attributes:
    id: unique within its file.
    task: task name (a RULER task, "dialogues", "documents_<source>", or any
      name a user picks).
    context: the long text the model reads first.
    question: what is asked about the context ("" for continuation samples).
    answer_prefix: text the prompt ends with, the start of the answer.
    answers: reference strings a generated answer is checked for ([] for
      continuation samples).
    max_new_tokens: tokens to generate; for continuation samples, the number
      of continuation tokens.
    continuation: reference text scored by likelihood, or None.
    metadata: free-form details (target length, token count, needle depths,
      metric name, sources...).
  """
  id: str
  task: str
  context: str
  question: str
  answer_prefix: str
  answers: list[str]
  max_new_tokens: int
  continuation: str | None = None
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

  def to_dict(self) -> dict[str, Any]:
    """The JSON object of this sample (fields in declaration order)."""
    return {field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)}

  @classmethod
  def from_dict(cls, record: Any) -> "Sample":
    """Validates a decoded JSON object; SampleError names the problem."""
    if not isinstance(record, dict):
      raise SampleError(
          f"a sample must be a JSON object, got {type(record).__name__}")
    names = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(record) - set(names))
    if unknown:
      raise SampleError(f"unknown field(s) {unknown}; the fields are {names}")
    for name in _REQUIRED:
      if name not in record:
        raise SampleError(f"missing field {name!r}")
    for name in ("id", "task", "context", "question", "answer_prefix"):
      _check_type(name, record[name], str)
    for name in ("id", "task"):
      if not record[name]:
        raise SampleError(f"field {name!r} must not be empty")
    answers = record["answers"]
    _check_type("answers", answers, list)
    for i, answer in enumerate(answers):
      if not isinstance(answer, str):
        raise SampleError(f"field 'answers'[{i}] must be a string, got "
                          f"{type(answer).__name__}")
    max_new_tokens = record["max_new_tokens"]
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
      raise SampleError(f"field 'max_new_tokens' must be an integer, got "
                        f"{type(max_new_tokens).__name__}")
    if max_new_tokens < 0:
      raise SampleError(f"field 'max_new_tokens' must be >= 0, got "
                        f"{max_new_tokens}")
    continuation = record.get("continuation")
    if continuation is not None:
      _check_type("continuation", continuation, str)
    metadata = record.get("metadata", {})
    _check_type("metadata", metadata, dict)
    if not answers and not continuation:
      raise SampleError("a sample needs 'answers' or a 'continuation' to be "
                        "scored against")
    return cls(id=record["id"], task=record["task"], context=record["context"],
               question=record["question"],
               answer_prefix=record["answer_prefix"], answers=list(answers),
               max_new_tokens=max_new_tokens, continuation=continuation,
               metadata=dict(metadata))


_REQUIRED = ("id", "task", "context", "question", "answer_prefix", "answers",
             "max_new_tokens")
_TYPE_NAMES = {str: "a string", list: "a list", dict: "an object"}


def _check_type(name: str, value: Any, kind: type) -> None:
  if not isinstance(value, kind):
    raise SampleError(f"field {name!r} must be {_TYPE_NAMES[kind]}, got "
                      f"{type(value).__name__}")


def prompt_text(sample: Sample) -> str:
  """The text the model reads (after BOS): context, question, answer prefix.

  Context and question are joined by a newline (either may be empty); the
  answer prefix follows the question directly, so it carries its own leading
  space (" Answer: ..."). A continuation, when there is one, follows the
  returned text directly.
  """
  return "\n".join(p for p in (sample.context, sample.question) if p) + (
      sample.answer_prefix)


def reference_continuation(sample: Sample) -> str | None:
  """The text a teacher-forced trace continues the prompt with: the
  sample's `continuation`, else its reference answers as the answer prefix
  expects them (" a, b." after "... is"), else None."""
  if sample.continuation:
    return sample.continuation
  if sample.answers:
    return " " + ", ".join(sample.answers) + "."
  return None


def count_tokens(tokenizer: TokenizerLike, text: str) -> int:
  """Tokens of `text` without BOS (`tokenizer.count` when it has one)."""
  count = getattr(tokenizer, "count", None)
  if count is not None:
    return int(count(text))
  return len(tokenizer.encode(text, add_bos=False))


def sample_length(sample: Sample, tokenizer: TokenizerLike) -> int:
  """BOS + prompt tokens + max_new_tokens: what a target length bounds."""
  return BOS_TOKENS + count_tokens(tokenizer, prompt_text(sample)) + (
      sample.max_new_tokens)


def fit_count(length: Callable[[int], int], budget: int, upper: int) -> int:
  """Largest n in [0, upper] with length(n) <= budget.

  `length` (e.g. the token count of a prompt built from n haystack units) must
  be nondecreasing, at least roughly: the returned n always satisfies
  length(n) <= budget, and length(n + 1) > budget unless n == upper. The
  search extrapolates from the tokens per unit seen so far, then gallops and
  bisects, so it measures a handful of texts rather than log2(upper).

  Raises:
    ValueError: when even length(0) exceeds the budget.
  """
  seen: dict[int, int] = {}

  def measure(n: int) -> int:
    if n not in seen:
      seen[n] = length(n)
    return seen[n]

  base = measure(0)
  if base > budget:
    raise ValueError(f"the fixed part of the prompt alone takes {base} tokens, "
                     f"over the budget of {budget}")
  lo, hi = 0, upper + 1  # length(lo) <= budget; hi fails or is past upper
  probe = min(upper, 16)
  for _ in range(4):  # secant steps towards the budget
    if probe <= lo or probe >= hi:
      break
    if measure(probe) <= budget:
      lo = probe
    else:
      hi = probe
    per_unit = (measure(probe) - base) / probe
    if per_unit <= 0:
      break
    probe = min(upper, int((budget - base) / per_unit))
  step = 1
  if hi == upper + 1:  # gallop up from the estimate to a failing count
    while hi == upper + 1 and lo < upper:
      probe = min(upper, lo + step)
      if measure(probe) <= budget:
        lo = probe
      else:
        hi = probe
      step *= 2
    if lo == upper:
      return upper
  else:  # gallop down from the failing estimate to a fitting count
    while hi - lo > 1:
      probe = max(lo + 1, hi - step)
      if measure(probe) <= budget:
        lo = probe
        break
      hi = probe
      step *= 2
  while hi - lo > 1:
    mid = (lo + hi) // 2
    if measure(mid) <= budget:
      lo = mid
    else:
      hi = mid
  return lo


def write_samples(path: str | os.PathLike[str],
                  samples: Iterable[Sample]) -> Path:
  """Writes samples as JSONL atomically (kvp_jax._files.atomic_output)."""
  path = Path(path)
  with _files.atomic_output(path) as tmp:
    with open(tmp, "w", encoding="utf-8") as f:
      for sample in samples:
        f.write(json.dumps(sample.to_dict(), ensure_ascii=False))
        f.write("\n")
  return path


def iter_samples(path: str | os.PathLike[str]) -> Iterator[Sample]:
  """Reads a JSONL file of samples, validating each record.

  Blank lines are skipped. Raises SampleError with the file and the 1-based
  line number for bad JSON, a missing or mistyped field, or a repeated id.
  """
  ids: dict[str, int] = {}
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise SampleError(f"bad JSON: {e.msg} (column {e.colno})", path,
                          number) from None
      try:
        sample = Sample.from_dict(record)
      except SampleError as e:
        raise SampleError(e.message, path, number) from None
      if sample.id in ids:
        raise SampleError(f"id {sample.id!r} repeats the one on line "
                          f"{ids[sample.id]}", path, number)
      ids[sample.id] = number
      yield sample


def read_samples(path: str | os.PathLike[str]) -> list[Sample]:
  """All samples of a JSONL file (see iter_samples)."""
  return list(iter_samples(path))


def read_sample_files(paths: Sequence[str | os.PathLike[str]]) -> list[Sample]:
  """Samples of several JSONL files, in order."""
  return [sample for path in paths for sample in iter_samples(path)]


def parse_length(text: str) -> int:
  """'4096' or '4k' (x1024) as a positive int; ValueError otherwise."""
  text = text.strip().lower()
  scale = 1024 if text.endswith("k") else 1
  digits = text[:-1] if scale > 1 else text
  if not digits.isdigit() or int(digits) <= 0:
    raise ValueError(f"bad length {text!r}: use a positive integer such as "
                     f"4096 or 4k")
  return int(digits) * scale
