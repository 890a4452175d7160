"""Recording a config's samples into a trace store, resumably.

The job builds every sample of the config's sources, tokenises the prompts,
groups them into batches of similar length (one compiled program per length
bucket), and records and commits one batch at a time. The batch plan depends
only on the config, so a killed job rebuilds the same plan, skips the
committed samples and continues with the next batch; a finished job has
nothing left to do.

Several processes (a multi-process job, `kvp_jax.distributed`) share the
work: every process builds the same plan, the not yet recorded batches get
their row indices from it (`planned_rows`), and process i of P records
batches number i, i+P, i+2P, ... of the plan into the one store as writer i of P
(`TraceStore.write_batch`, as one process does with P = 1); process 0
merges the commits when all are done. Kill any process, rerun the job
(with any number of processes): it continues at the same rows, and the
finished store equals a one-process run's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from kvp_jax import _locks
from kvp_jax import distributed
from kvp_jax import samples as samples_lib
from kvp_jax.samples import sources as sources_lib
from kvp_jax import inference
from kvp_jax.traces._capture import record_traces
from kvp_jax.traces._capture import TARGETS
from kvp_jax.traces._capture import Trace
from kvp_jax.traces._store import StoreError
from kvp_jax.traces._store import metadata_differences
from kvp_jax.traces._store import StoreLayout
from kvp_jax.traces._store import TraceStore
from kvp_jax.model import Pretrained


@dataclasses.dataclass(frozen=True)
class PlannedSample:
  """A sample ready to record: prompt ids (BOS first), optional given
  continuation ids, its train/validation/test split, and how its trace is
  split (`split_settings`)."""
  sample: samples_lib.Sample
  prompt: tuple[int, ...]
  continuation: tuple[int, ...] | None
  split: str
  num_random_splits: int = 0
  min_prompt_length: int = 0

  @property
  def split_settings(self) -> tuple[int, int]:
    return normal_split_settings(self.num_random_splits,
                                 self.min_prompt_length)


def split_of(sample_id: str, seed: int,
             fractions: Sequence[float]) -> str:
  """train/validation/test by a seeded hash of the id (order-independent)."""
  if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(
      fractions) < 0:
    raise ValueError(f"split_fractions must be 3 non-negative numbers summing "
                     f"to 1, got {tuple(fractions)}")
  u = zlib.crc32(f"{seed}|{sample_id}".encode()) / 2 ** 32
  if u < fractions[0]:
    return "train"
  return "validation" if u < fractions[0] + fractions[1] else "test"


def sample_rng(sample_id: str, seed: int) -> np.random.Generator:
  """The generator of a sample's random split points."""
  return np.random.default_rng([seed, zlib.crc32(sample_id.encode())])


def split_settings(cfg, source: Mapping[str, Any] | None = None
                   ) -> tuple[int, int]:
  """(num_random_splits, min_prompt_length) of a source's traces: the
  source's own where it names them, else the `traces` section's.

  Raises ValueError for num_random_splits < 0 or min_prompt_length < 1.
  """
  source = source or {}
  n = int(source.get("num_random_splits", cfg.num_random_splits))
  low = int(source.get("min_prompt_length", cfg.min_prompt_length))
  if n < 0 or low < 1:
    raise ValueError(f"num_random_splits={n} and min_prompt_length={low}: "
                     "need num_random_splits >= 0 and min_prompt_length >= 1"
                     + (f" (source {dict(source)})" if source else ""))
  return n, low


def normal_split_settings(num_random_splits: int, min_prompt_length: int
                          ) -> tuple[int, int]:
  """Split settings as they decide a trace: without random split points
  the shortest prompt length does not matter (0)."""
  n = int(num_random_splits)
  return n, int(min_prompt_length) if n else 0


def _store_split_settings(store: TraceStore, rec) -> tuple[int, int]:
  """How a committed record was split: its own settings where the record
  names them, else its store's `traces` section's."""
  if rec.split_settings is not None:
    return normal_split_settings(*rec.split_settings)
  gen = store.metadata["generation"]
  return normal_split_settings(gen["num_random_splits"],
                               gen["min_prompt_length"])


def check_split_settings(store: TraceStore,
                         plan: Sequence[Sequence[PlannedSample]]) -> None:
  """Refuses to resume a store whose committed traces were split otherwise
  than this run splits the same samples (a source's settings changed).

  Raises:
    StoreError naming the first such trace.
  """
  by_id = {r.id: r for r in store.records}
  for p in (p for batch in plan for p in batch):
    rec = by_id.get(p.sample.id)
    if rec is None:
      continue
    had = _store_split_settings(store, rec)
    if had != p.split_settings:
      raise StoreError(
          f"{store.path}: trace {rec.id!r} was recorded with "
          f"(num_random_splits, min_prompt_length) = {had}, this run has "
          f"{p.split_settings}: record into another store")


def max_random_splits(cfg) -> int:
  """The most random split points any source's traces have (the store's
  split slots are one more)."""
  return max([split_settings(cfg)[0]]
             + [split_settings(cfg, s)[0] for s in cfg.sources])


def plan_batches(samples: Sequence[samples_lib.Sample], tokenizer,
                 cfg, settings: Mapping[str, tuple[int, int]] | None = None
                 ) -> list[list[PlannedSample]]:
  """Batches of samples with prompts in the same length bucket.

  Args:
    settings: per sample id, its (num_random_splits, min_prompt_length)
      (default: the `traces` section's for every sample).
  Raises ValueError for a sample whose trace cannot fit the store.
  """
  default = split_settings(cfg)
  prompts = tokenizer.encode_batch(
      [samples_lib.prompt_text(s) for s in samples], add_bos=True)
  buckets: dict[int, list[PlannedSample]] = {}
  for sample, prompt in zip(samples, prompts):
    cont = None
    if cfg.continuation == "reference":
      text = samples_lib.reference_continuation(sample)
      if not text:
        raise ValueError(f"sample {sample.id!r} has neither a continuation "
                         "nor reference answers, needed with "
                         "traces.continuation='reference'")
      cont = tuple(tokenizer.encode(text)[:cfg.max_new_tokens])
    elif cfg.continuation != "greedy":
      raise ValueError("traces.continuation must be 'greedy' or 'reference', "
                       f"got {cfg.continuation!r}")
    if len(prompt) + cfg.max_new_tokens > cfg.max_length:
      raise ValueError(
          f"sample {sample.id!r}: {len(prompt)} prompt tokens + "
          f"{cfg.max_new_tokens} new tokens exceed traces.max_length="
          f"{cfg.max_length}")
    bucket = inference.bucket_length(len(prompt), cfg.pad_multiple)
    n, low = (settings or {}).get(sample.id, default)
    buckets.setdefault(bucket, []).append(PlannedSample(
        sample, tuple(prompt), cont,
        split_of(sample.id, cfg.seed, cfg.split_fractions), n, low))
  plan = []
  for bucket in sorted(buckets):
    items = buckets[bucket]
    for i in range(0, len(items), cfg.batch_size):
      plan.append(items[i:i + cfg.batch_size])
  return plan


def recording_settings(cfg) -> dict[str, Any]:
  """The `traces` section's settings that decide a trace's content (the
  store records them; training checks its config against them)."""
  settings = {
      "generation": {"max_new_tokens": int(cfg.max_new_tokens),
                     "continuation": str(cfg.continuation),
                     "num_random_splits": int(cfg.num_random_splits),
                     "min_prompt_length": int(cfg.min_prompt_length)},
      "split_fractions": [float(x) for x in cfg.split_fractions],
      "seed": int(cfg.seed),
  }
  # Stores of the paper's target predate the setting: recorded only when
  # it differs, so their metadata still matches.
  if trace_target(cfg) != "attention":
    settings["target"] = trace_target(cfg)
  return settings


def trace_target(cfg) -> str:
  """traces.target ("attention" when the section predates it)."""
  return str(cfg.get("target", "attention")) if hasattr(cfg, "get") else (
      "attention")


def store_metadata(model: Pretrained, cfg) -> dict[str, Any]:
  """What decides a trace's content (a reopened store must match it)."""
  tok = hashlib.sha256(model.tokenizer.proto).hexdigest()[:16] if (
      model.tokenizer) else None
  return {
      "model": {"name": model.config.name, "fingerprint": model.fingerprint,
                "compute_dtype": model.config.compute_dtype},
      "tokenizer": tok,
      **recording_settings(cfg),
      "data_source": json.loads(json.dumps(_plain(cfg.sources))),
      "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
  }


def _plain(x):
  if hasattr(x, "to_dict"):
    return x.to_dict()
  if isinstance(x, Mapping):
    return {k: _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  return x


def planned_rows(store: TraceStore, plan: Sequence[Sequence[PlannedSample]]
                 ) -> list[tuple[int, int, list[PlannedSample]]]:
  """(batch number in the plan, first row, samples) of every planned batch
  not recorded yet.

  Rows follow the plan: the samples not in records.jsonl, in plan order,
  take rows num_consolidated, num_consolidated + 1, ...; so one writer
  writing batch after batch and several writers each writing their own
  batches fill the same rows. Merging commits (`TraceStore.consolidate`)
  keeps every pending row where it was.

  Raises:
    StoreError: a committed record that is not at its planned row (the
      store's unmerged commits come from another plan: other sources).
  """
  n0 = store.num_consolidated
  merged = {r.id for r in store.records if r.index < n0}
  pending = {r.id: r.index for r in store.records if r.index >= n0}
  out, row = [], n0
  for k, batch in enumerate(plan):
    rest = [p for p in batch if p.sample.id not in merged]
    for offset, p in enumerate(rest):
      if pending.get(p.sample.id, row + offset) != row + offset:
        raise StoreError(
            f"{store.path}: trace {p.sample.id!r} is committed at row "
            f"{pending[p.sample.id]}, planned at {row + offset}: its "
            "unmerged commits come from other sources; rerun with the "
            "sources that made them")
    todo = [p for p in rest if p.sample.id not in pending]
    if todo and len(todo) != len(rest):
      raise StoreError(f"{store.path}: a batch is partly committed at rows "
                       f"{row}..{row + len(rest) - 1}")
    if todo:
      out.append((k, row, todo))
    row += len(rest)
  return out


def _record_batch(model: Pretrained, cfg, batch: Sequence[PlannedSample]):
  """The traces of one planned batch (padded to cfg.batch_size with copies
  of its first sample, dropped after, so every batch of a bucket reuses one
  compiled program)."""
  rows = list(batch) + [batch[0]] * (cfg.batch_size - len(batch))
  given = [list(p.continuation) for p in rows] if (
      cfg.continuation == "reference") else None
  # Every batch computes the store's split slots, so that a length bucket
  # mixing sources still reuses one compiled program.
  recorded = record_traces(
      model, [list(p.prompt) for p in rows], None,
      max_new_tokens=int(cfg.max_new_tokens), with_kv=bool(cfg.with_kv),
      kv_dtype=cfg.kv_dtype, pad_multiple=int(cfg.pad_multiple),
      continuations=given,
      num_random_splits=[p.num_random_splits for p in rows],
      min_prompt_length=[p.min_prompt_length for p in rows],
      rngs=[sample_rng(p.sample.id, int(cfg.seed)) for p in rows],
      target=trace_target(cfg), num_split_slots=1 + max_random_splits(cfg))
  return recorded[:len(batch)]


class ReusedTraces:
  """Traces already recorded in other stores (the `traces` section's
  `reuse`) that this job would record the same way: same model, tokenizer,
  generation, split seed and fractions, target and key/value dtype, and, per
  sample, the same prompt (and given continuation), data split and split
  settings. The job copies them instead of recording them again (a store of
  both RULER-style tasks and dialogues from the stores of each).

  Raises ValueError naming a store recorded otherwise.
  """

  def __init__(self, paths: Sequence[str], model: Pretrained, cfg):
    want = store_metadata(model, cfg)
    self.cfg = cfg
    self.by_id: dict[str, list] = {}
    for path in paths:
      store = TraceStore.open(path)
      diffs = metadata_differences(
          store.metadata, want, ignore=("data_source", "created", "layout",
                                        "schema_version"))
      diffs = [d for d in diffs if not d.startswith((
          "generation.num_random_splits", "generation.min_prompt_length"))]
      if bool(cfg.with_kv):
        if not store.layout.with_kv:
          diffs.append("the store holds no keys and values; this run needs "
                       "them")
        elif store.layout.kv_dtype != str(cfg.kv_dtype):
          diffs.append(f"kv_dtype: store has {store.layout.kv_dtype}, this "
                       f"run has {cfg.kv_dtype}")
      if diffs:
        raise ValueError(f"traces.reuse: {path} was not recorded as this run "
                         "records: " + "; ".join(diffs))
      for rec in store.records:
        self.by_id.setdefault(rec.id, []).append(
            (store, rec, _store_split_settings(store, rec)))

  def find(self, p: PlannedSample) -> Trace | None:
    """The recorded trace of a planned sample, or None."""
    for store, rec, settings in self.by_id.get(p.sample.id, ()):
      own = rec.num_splits or store.layout.num_splits
      if (settings != p.split_settings or own != 1 + p.num_random_splits
          or rec.split != p.split or rec.prompt_length != len(p.prompt)):
        continue
      tokens = store.read(rec.index, fields=("tokens",))["tokens"].tolist()
      if tokens[:rec.prompt_length] != list(p.prompt):
        continue
      if (self.cfg.continuation == "reference"
          and tokens[rec.prompt_length:] != list(p.continuation)):
        continue
      return store.trace(rec.index)
    return None


def _traces_of(model: Pretrained, cfg, batch: Sequence[PlannedSample],
               reused: ReusedTraces | None):
  """The batch's traces: copied where `reused` holds them, else recorded;
  and how many were copied."""
  found = [reused.find(p) if reused else None for p in batch]
  todo = [p for p, t in zip(batch, found) if t is None]
  recorded = iter(_record_batch(model, cfg, todo) if todo else [])
  return ([t if t is not None else next(recorded) for t in found],
          len(batch) - len(todo))


def _store_layout(model: Pretrained, cfg) -> StoreLayout:
  c = model.config
  return StoreLayout(
      num_layers=c.num_layers, num_kv_heads=c.num_kv_heads,
      head_dim=c.head_dim, max_length=int(cfg.max_length),
      num_splits=1 + max_random_splits(cfg), with_kv=bool(cfg.with_kv),
      kv_dtype=cfg.kv_dtype,
      layer_windows=tuple(c.layer_window(i) or 0
                          for i in range(c.num_layers)))


def _open_for(role: _locks.Role, store_path, metadata, layout, plan,
              max_batches):
  """(store, this run's batches).

  Writer 0 opens (creates, repairs, merges finished commits) and sizes the
  arrays first; the others open after it (a barrier), so that every
  process sees the same store and plans the same rows.
  """
  def prepare():
    store = TraceStore.create_or_resume(store_path, metadata, layout, role)
    if role.index == 0:
      store.consolidate()
    check_split_settings(store, plan)
    todo = planned_rows(store, plan)
    if max_batches is not None:
      todo = todo[:max_batches]
    if todo:
      store.reserve(max(row + len(b) for _, row, b in todo))
    return store, todo

  if role.index == 0:
    opened = prepare()
  distributed.sync("trace store opened")
  if role.index != 0:
    opened = prepare()
  return opened


def generate_traces(model: Pretrained, cfg, store_path: str | Path, *,
                    samples: Sequence[samples_lib.Sample] | None = None,
                    max_batches: int | None = None,
                    progress: bool = True,
                    role: _locks.Role | None = None) -> TraceStore:
  """Records the config's samples into the store at store_path.

  Args:
    model: the frozen decoder (its tokenizer builds the prompts).
    cfg: the config's `traces` section.
    samples: samples to record instead of building cfg.sources (each
      split as the `traces` section says, whatever its sources say).
    max_batches: stop after this many new batches (of the whole job; tests,
      smoke runs).
    role: this writer (default: this process of the JAX job, writer
      jax.process_index() of jax.process_count()); writer i records the
      unrecorded batches number i, i + count, ... of the plan.
  Returns:
    The store, with every planned sample committed (unless max_batches, or
    another writer's batches are missing).
  """
  role = role or distributed.writer_role()
  if trace_target(cfg) not in TARGETS:
    raise ValueError(f"traces.target={trace_target(cfg)!r}: must be one of "
                     f"{', '.join(TARGETS)}")
  settings = None
  if samples is None:
    groups = sources_lib.build_samples_per_source(cfg.sources,
                                                  model.tokenizer)
    settings = {s.id: split_settings(cfg, source)
                for source, group in zip(cfg.sources, groups) for s in group}
    samples = [s for group in groups for s in group]
  if not samples:
    raise ValueError("traces.sources produced no samples")
  plan = plan_batches(samples, model.tokenizer, cfg, settings)
  reuse = list(cfg.get("reuse", None) or []) if hasattr(cfg, "get") else []
  reused = ReusedTraces(reuse, model, cfg) if reuse else None
  store, todo = _open_for(role, store_path,
                           store_metadata(model, cfg),
                           _store_layout(model, cfg), plan, max_batches)
  if not todo:
    logging.info("%s: all %d samples already recorded", store_path,
                 len(samples))
    return store
  mine = [(row, b) for k, row, b in todo if k % role.count == role.index]
  bar = tqdm(total=sum(len(b) for _, b in mine), desc="recording traces",
             unit="trace", disable=not progress)
  start, tokens, copied = time.time(), 0, 0
  section = normal_split_settings(*split_settings(cfg))
  for row, batch in mine:
    recorded, n = _traces_of(model, cfg, batch, reused)
    copied += n
    infos = [{"id": p.sample.id, "task": p.sample.task, "split": p.split,
              **({"split_settings": list(p.split_settings)}
                 if p.split_settings != section else {})}
             for p in batch]
    store.write_batch(recorded, infos, row)
    tokens += sum(t.length for t in recorded)
    bar.update(len(batch))
    bar.set_postfix(tokens_per_s=f"{tokens / (time.time() - start):.0f}")
  bar.close()
  if reused:
    logging.info("%s: %d of %d traces copied from %s", store_path, copied,
                 bar.total, ", ".join(reuse))
  _merge(store, role)
  return store


def _merge(store: TraceStore, role: _locks.Role) -> None:
  """Once every writer is done, writer 0 merges the commits (every
  writer's, reread); then the others reread the store."""
  distributed.sync("traces recorded")
  if role.index == 0:
    store.consolidate()
  distributed.sync("traces merged")
  if role.index != 0:
    store.refresh()
