"""Sample sources named in experiment configs, built into Sample lists.

A source is a mapping with a `kind`:

  {"kind": "ruler", "tasks": [...], "lengths": [1024, ...], "num_samples": n,
   "seed": s}
  {"kind": "dialogues", "lengths": [...], "num_samples": n, "seed": s,
   "pool": "train" | "heldout" | "all"}
  {"kind": "documents", "source": "pydoc" | "python_doc" | DIR,
   "lengths": [...], "num_samples": n, "seed": s, "pool": ...}
  {"kind": "jsonl", "paths": [...]}           (a user's own samples)

A dialogues or documents source may set "continuation_tokens": about that
many tokens of each sample are its reference continuation at every length
(default: a quarter of each sample, documents.DEFAULT_CONTINUATION_FRACTION).

Any source may also say how its traces are split (kvp_jax.traces): its own
"num_random_splits" and "min_prompt_length", which override the `traces`
section's for its samples (one store of RULER-style tasks at their true
split and dialogues at random ones).

Dialogue and document sources draw from a pool: conversations (documents)
are split once, by a hash of their id, into a training pool (90%) and a
held-out pool (10%), so traces for training and evaluation suites never share
a conversation whatever seeds they use.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Mapping, Sequence

from kvp_jax.samples import dialogues
from kvp_jax.samples import documents
from kvp_jax.samples import ruler
from kvp_jax.samples import schema as samples_lib

KINDS = ("ruler", "dialogues", "documents", "jsonl")
POOLS = ("train", "heldout", "all")
HELDOUT_PERCENT = 10


def in_pool(item_id: str, pool: str) -> bool:
  """Whether a conversation/document id belongs to a pool."""
  if pool not in POOLS:
    raise ValueError(f"unknown pool {pool!r}; known: {POOLS}")
  heldout = zlib.crc32(item_id.encode()) % 100 < HELDOUT_PERCENT
  return pool == "all" or (pool == "heldout") == heldout


def _get(source: Mapping[str, Any], key: str, default: Any = None) -> Any:
  value = source.get(key, default)
  if value is None:
    raise ValueError(f"{source.get('kind')} source needs {key!r}: {source}")
  return value


def _with_pool(samples, pool: str):
  """Ids that name the pool: another pool's samples are other samples."""
  return [dataclasses.replace(s, id=f"{s.id}-{pool}") for s in samples]


def build_samples(sources: Sequence[Mapping[str, Any]],
                  tokenizer) -> list[samples_lib.Sample]:
  """All samples of the sources, in order; ids must be unique.

  Raises:
    ValueError: unknown kind/task/pool, or duplicate sample ids.
    SampleError: a malformed JSONL record (names file and line).
  """
  return [s for group in build_samples_per_source(sources, tokenizer)
          for s in group]


def build_samples_per_source(sources: Sequence[Mapping[str, Any]], tokenizer
                             ) -> list[list[samples_lib.Sample]]:
  """`build_samples`, one list per source (in the sources' order)."""
  groups = [_source_samples(dict(source), tokenizer) for source in sources]
  seen: set[str] = set()
  for s in (s for group in groups for s in group):
    if s.id in seen:
      raise ValueError(f"duplicate sample id {s.id!r}: give sources "
                       "different seeds or ids")
    seen.add(s.id)
  return groups


def _source_samples(source: dict[str, Any], tokenizer
                    ) -> list[samples_lib.Sample]:
  """The samples of one source."""
  out: list[samples_lib.Sample] = []
  kind = source.get("kind")
  if kind not in KINDS:
    raise ValueError(f"unknown source kind {kind!r}; known: {KINDS}")
  if kind == "jsonl":
    return samples_lib.read_sample_files(list(_get(source, "paths")))
  lengths = [int(x) for x in _get(source, "lengths")]
  n, seed = int(_get(source, "num_samples")), int(source.get("seed", 0))
  if kind == "ruler":
    for task in _get(source, "tasks"):
      for length in lengths:
        out += ruler.generate_task(task, n, length, tokenizer, seed)
  elif kind == "dialogues":
    pool = source.get("pool", "all")
    convs = [c for c in dialogues.load_conversations() if in_pool(c.id, pool)]
    for length in lengths:
      out += _with_pool(dialogues.generate_dialogues(
          n, length, tokenizer, seed, conversations=convs,
          continuation_fraction=_continuation_fraction(source, length)), pool)
  else:
    pool = source.get("pool", "all")
    name = _get(source, "source")
    docs = [d for d in documents.load_documents(name)
            if in_pool(d.name, pool)]
    task = f"documents_{documents.source_name(name)}"
    for length in lengths:
      out += _with_pool(documents.generate_documents(
          docs, n, length, tokenizer, seed, task=task,
          continuation_fraction=_continuation_fraction(source, length)), pool)
  return out


def _continuation_fraction(source: Mapping[str, Any], length: int) -> float:
  """The share of a sample of `length` tokens its continuation takes."""
  tokens = source.get("continuation_tokens")
  if tokens is None:
    return documents.DEFAULT_CONTINUATION_FRACTION
  if not 0 < int(tokens) < length // 2:
    raise ValueError(f"{source.get('kind')} source: continuation_tokens "
                     f"{tokens} is not in (0, {length // 2}) for samples of "
                     f"{length} tokens")
  return int(tokens) / length
