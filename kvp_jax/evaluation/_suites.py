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
  episodic        long-conversation QA, every question of a conversation
                  read from the same compressed state. Cells: the full
                  cache; each grid scorer as a plain baseline (one cache of
                  the conversation, prefilled block by block with eviction
                  after every block, eval.chunk_size;
                  kvp_jax.eviction.answer_compressed), unless plain=False;
                  "epicache" (kvp_jax.eviction.answer_conversation: windows
                  clustered into episodes, one cache per episode, scored by
                  SnapKV over its medoid, each question routed to one; with
                  the layer_profile's budgets when one is named).
                  {"kind": "episodic", "sources": [jsonl of long
                   conversation samples] and/or "conversations":
                   {"num_conversations": n, "target_length": t, "seed": s,
                    "num_facts": f, "max_new_tokens": m},
                   "episodic": {EpisodicSettings fields},
                   "layer_profile": JSON path ("" = uniform budgets),
                   "alpha": float, "min_fraction": float,
                   "blend_weight": float (adds an "epicache+kvp" cell),
                   "plain": bool (default true)}
                  Change the suite's name when changing these settings: the
                  sample log's key does not hold them.

Sources are those of kvp_jax.samples.sources (ruler, dialogues, documents,
jsonl); use seeds and pools that the training traces did not.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

from kvp_jax import samples as samples_lib
from kvp_jax.samples import long_conversations
from kvp_jax.samples import sources as sources_lib

KINDS = ("ruler", "perplexity", "attention_cost", "episodic")
# The episodic suite's own settings, carried to its runner in each sample's
# metadata under this key (the runner is called with the items only).
EPISODIC_KEY = "episodic_suite"
_EPISODIC_FIELDS = ("episodic", "layer_profile", "alpha", "min_fraction",
                    "blend_weight", "plain")


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
  if kind == "episodic":
    samples = _episodic_samples(suite, samples, tokenizer)
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


def _episodic_samples(suite: Mapping[str, Any], samples, tokenizer):
  """The suite's conversations (generated and/or from its sources), each
  sample carrying the suite's episodic settings; every sample must name its
  conversation."""
  spec = suite.get("conversations")
  if spec:
    spec = dict(spec)
    samples = list(samples) + long_conversations.generate_long_conversations(
        int(spec.pop("num_conversations", 1)),
        int(spec.pop("target_length", 4096)), tokenizer,
        int(spec.pop("seed", 2000)), **spec)
  settings = {k: suite[k] for k in _EPISODIC_FIELDS if k in suite}
  settings = {k: (dict(v) if hasattr(v, "items") else v)
              for k, v in settings.items()}
  out = []
  for sample in samples:
    if "conversation_id" not in sample.metadata:
      raise ValueError(f"sample {sample.id!r} has no metadata "
                       f"conversation_id: an episodic suite needs long "
                       f"conversations (kvp_jax.samples.long_conversations)")
    out.append(dataclasses.replace(
        sample, metadata={**sample.metadata, EPISODIC_KEY: settings}))
  return out
