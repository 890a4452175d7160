"""Evaluation suites: which samples, how they are prompted and scored.

A suite is a mapping with a `kind`:

  ruler           RULER-style tasks, scored as RULER scores them (share of
                  reference strings in the greedy answer, x100).
                  {"kind": "ruler", "sources": [ruler or jsonl sources],
                   "max_new_tokens": int | {task: int} (default: the task's)}
  perplexity      the reference continuation's perplexity given a context
                  (dialogues, documents, a user's JSONL or text files).
                  {"kind": "perplexity", "sources": [...],
                   "text_files": [paths], "context_tokens": n,
                   "continuation_tokens": m}
  attention_cost  each scorer's normalised future-attention cost per
                  (layer, KV head) on greedy continuations (1.0 = oracle);
                  independent of the budget.
                  {"kind": "attention_cost", "sources": [...],
                   "max_new_tokens": n}

Sources are those of data_pipelines.sources (ruler, dialogues, documents,
jsonl); use seeds and pools that the training traces did not.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

from kvp_jax import samples as samples_lib
from kvp_jax.samples import sources as sources_lib

KINDS = ("ruler", "perplexity", "attention_cost")


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


def suite_name(suite: Mapping[str, Any], index: int) -> str:
  return str(suite.get("name") or f"{suite['kind']}{index}")


def _length_tag(sample: samples_lib.Sample) -> str:
  target = sample.metadata.get("target_length")
  return f"@{target}" if target else ""


def _text_file_samples(paths: Sequence[str], tokenizer, context_tokens: int,
                       continuation_tokens: int) -> list[samples_lib.Sample]:
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
  kind = suite.get("kind")
  if kind not in KINDS:
    raise ValueError(f"unknown suite kind {kind!r}; known: {KINDS}")
  samples = sources_lib.build_samples(list(suite.get("sources", [])),
                                      tokenizer)
  if kind == "perplexity" and suite.get("text_files"):
    samples += _text_file_samples(
        list(suite["text_files"]), tokenizer,
        int(suite.get("context_tokens", 1024)),
        int(suite.get("continuation_tokens", 256)))
  if not samples:
    raise ValueError(f"suite {suite.get('name', kind)!r} has no samples")
  prompts = tokenizer.encode_batch(
      [samples_lib.prompt_text(s) for s in samples], add_bos=True)
  items = []
  for sample, prompt in zip(samples, prompts):
    group = f"{sample.task}{_length_tag(sample)}"
    if kind == "perplexity":
      if not sample.continuation:
        raise ValueError(f"sample {sample.id!r} has no continuation to score")
      cont = tuple(tokenizer.encode(sample.continuation))
      items.append(Item(sample, group, tuple(prompt), cont, len(cont)))
      continue
    budget = suite.get("max_new_tokens")
    if isinstance(budget, Mapping):
      n = int(budget.get(sample.task, sample.max_new_tokens))
    else:
      n = int(budget or sample.max_new_tokens)
    items.append(Item(sample, group, tuple(prompt), None, n))
  return items
