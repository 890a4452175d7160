"""The grain input pipeline: trace store -> fixed-shape training batches.

Elements are (record, split point) pairs. A record stores importance for its
true prompt length and for some random split points (method section 2), so
"an optional random split point" is a choice among its stored splits. Each
element keeps only the tokens before its split point (the ones a policy
ranks), padded to the smallest bucket that holds them; batches are formed
within a bucket, so a jitted train step sees only a few shapes.

Per bucket: shuffle (seeded) -> repeat -> read -> batch; buckets are mixed
in proportion to their sizes. The iterator is a grain DatasetIterator, whose
state is saved with training checkpoints: a restored iterator yields the same
batches as the original would have.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Sequence

import grain
import numpy as np

from kvp_jax.cache import Protected
from kvp_jax.traces import TraceStore

_PROTECTED = Protected()       # The default protected set (cache.Protected).

SPLIT_MODES = ("true", "random", "all")


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """How training batches are made.

  batch_size: traces per batch.
  buckets: padded lengths (ascending); an element goes to the smallest one
    that holds its split point. Elements longer than the last are dropped
    (and counted), so choose the last at least the longest prompt.
  split_mode: "true" (the recorded prompt length), "random" (the stored
    random split points; dialogues), or "all" (both). A trace with no
    random split points of its own (a RULER-style one in a store that also
    holds dialogues) gives its true split in every mode.
  num_sinks, num_recent: tokens always kept at inference, so left out of the
    ranked set (method section 5); cache.Protected's defaults, and recorded
    in the exported policy.
  layers: (start, stop) of the layers whose agents this process trains.
  features: "stored" (keys and values read from the store) or
    "recomputed" (token ids only; the trainer recomputes k and v).
  seed: shuffling seed.
  num_workers: grain worker processes (0 = read in the main process).
  prefetch_batches: batches read ahead (by threads in each reading
    process). An element here is a whole batch (tens of MB to GBs), so
    grain's default read-ahead of 500 elements would fill the host memory.
  shard_index, shard_count: this process's share of the elements.
  """
  batch_size: int = 32
  buckets: tuple[int, ...] = (512, 1024, 2048, 4096)
  split_mode: str = "true"
  num_sinks: int = _PROTECTED.num_sinks
  num_recent: int = _PROTECTED.num_recent
  layers: tuple[int, int] | None = None
  features: str = "stored"
  seed: int = 0
  num_workers: int = 0
  prefetch_batches: int = 2
  shard_index: int = 0
  shard_count: int = 1

  def __post_init__(self):
    if self.split_mode not in SPLIT_MODES:
      raise ValueError(f"split_mode must be one of {SPLIT_MODES}, got "
                       f"{self.split_mode!r}")
    if self.features not in ("stored", "recomputed"):
      raise ValueError("features must be 'stored' or 'recomputed', got "
                       f"{self.features!r}")
    if list(self.buckets) != sorted(self.buckets) or not self.buckets:
      raise ValueError(f"buckets must be ascending, got {self.buckets}")


@dataclasses.dataclass(frozen=True)
class Element:
  record: int
  split: int          # Index into the record's stored split points.
  prompt_length: int  # The split point P: tokens 0..P-1 are ranked.
  bucket: int


def elements(store: TraceStore, split: str, cfg: InputConfig
             ) -> tuple[list[Element], int]:
  """(record, split point) pairs of a data split, and how many were dropped
  for being longer than the last bucket."""
  out, dropped = [], 0
  for rec in store.records_in(split):
    num_splits = rec.num_splits or store.layout.num_splits  # Its own slots.
    data = store.read(rec.index, fields=("split_points",))["split_points"]
    if cfg.split_mode == "true":
      choices = [0]
    elif cfg.split_mode == "random":
      choices = list(range(1, num_splits)) or [0]
    else:
      choices = list(range(num_splits))
    for s in dict.fromkeys(choices):
      p = int(data[s])
      bucket = next((b for b in cfg.buckets if b >= p), None)
      if bucket is None:
        dropped += 1
        continue
      out.append(Element(rec.index, s, p, bucket))
  return out[cfg.shard_index::cfg.shard_count], dropped


class ReadElement(grain.transforms.Map):
  """Element -> a dict of fixed-shape numpy arrays (one training example).

  keys, values: [A, bucket, H] (stored features) with A = layers x KV heads.
  tokens: [bucket] int32 (recomputed features; 0 past P).
  positions: [bucket] int32 (-1 past P).
  importance: [A, bucket] float32 (0 past P).
  valid: [bucket] bool, the ranked set: num_sinks <= j < P - num_recent.
  context_length: [] int32 = P.
  """

  def __init__(self, store: TraceStore, cfg: InputConfig):
    self.store = store
    self.cfg = cfg

  def map(self, element: Element) -> dict[str, np.ndarray]:
    cfg, lay = self.cfg, self.store.layout
    p, t = element.prompt_length, element.bucket
    layers = slice(*cfg.layers) if cfg.layers else slice(None)
    fields = ["tokens", "importance"]
    if cfg.features == "stored":
      fields += ["keys", "values"]
    data = self.store.read(element.record, length=p, layers=layers,
                           fields=fields)
    out = {}
    imp = data["importance"][:, :, element.split]               # [L', K, P]
    out["importance"] = _pad(imp.reshape(-1, p), t).astype(np.float32)
    if cfg.features == "stored":
      for name in ("keys", "values"):
        x = data[name].reshape(-1, p, lay.head_dim)             # [A, P, H]
        out[name] = _pad(x, t, axis=1)
    out["tokens"] = _pad(data["tokens"].astype(np.int32), t)
    pos = np.arange(t, dtype=np.int32)
    out["positions"] = np.where(pos < p, pos, -1).astype(np.int32)
    out["valid"] = (pos >= cfg.num_sinks) & (pos < p - cfg.num_recent)
    out["context_length"] = np.int32(p)
    out["record"] = np.int32(element.record)
    return out


def _pad(x: np.ndarray, length: int, axis: int = -1) -> np.ndarray:
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, length - x.shape[axis])
  return np.pad(x, widths)


def train_dataset(store: TraceStore, cfg: InputConfig,
                  split: str = "train") -> grain.IterDataset:
  """An endless, shuffled, bucketed dataset of training batches."""
  elems, _ = elements(store, split, cfg)
  if not elems:
    raise ValueError(f"{store.path}: no {split!r} elements for "
                     f"split_mode={cfg.split_mode!r} and buckets "
                     f"{cfg.buckets}")
  per_bucket: dict[int, list[Element]] = {}
  for e in elems:
    per_bucket.setdefault(e.bucket, []).append(e)
  reader = ReadElement(store, cfg)
  parts, weights = [], []
  for i, bucket in enumerate(sorted(per_bucket)):
    items = per_bucket[bucket]
    ds = (grain.MapDataset.source(items).shuffle(seed=cfg.seed + i).repeat()
          .map(reader).batch(cfg.batch_size, drop_remainder=True))
    parts.append(ds)
    weights.append(len(items))
  return mixed_iterator(parts, weights, cfg)


def eval_batches(store: TraceStore, cfg: InputConfig,
                 split: str = "validation",
                 max_batches: int | None = None
                 ) -> Iterator[dict[str, np.ndarray]]:
  """Every element of a split once, in order, bucketed; the last batch of a
  bucket is padded with copies, marked by `weight` = 0."""
  elems, _ = elements(store, split, cfg)
  reader = ReadElement(store, cfg)
  for chunk, weight in padded_eval_chunks(elems, cfg.batch_size, max_batches):
    batch = stack([reader.map(e) for e in chunk])
    batch["weight"] = weight
    yield batch


def padded_eval_chunks(elems: Sequence[Element], batch_size: int,
                       max_batches: int | None = None
                       ) -> Iterator[tuple[list[Element], np.ndarray]]:
  """The evaluation order of `elems`: bucket by bucket, batch_size at a
  time; a bucket's last chunk padded with copies of its first element.
  Yields (chunk of batch_size elements, weight [batch_size] float32: 1 for
  a real element, 0 for a copy), at most max_batches of them."""
  count = 0
  for bucket in sorted({e.bucket for e in elems}):
    items = [e for e in elems if e.bucket == bucket]
    for i in range(0, len(items), batch_size):
      chunk = items[i:i + batch_size]
      weight = np.zeros(batch_size, np.float32)
      weight[:len(chunk)] = 1
      yield chunk + [chunk[0]] * (batch_size - len(chunk)), weight
      count += 1
      if max_batches is not None and count >= max_batches:
        return


def stack(examples: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def mixed_iterator(parts, weights, cfg: InputConfig):
  """The bucketed batch datasets mixed by weight into one (checkpointable)
  iterator, read ahead `prefetch_batches`, in worker processes if asked."""
  mixed = parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, weights)
  it = mixed.to_iter_dataset(grain.ReadOptions(
      num_threads=max(1, cfg.prefetch_batches),
      prefetch_buffer_size=max(1, cfg.prefetch_batches)))
  if cfg.num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=cfg.num_workers,
        per_worker_buffer_size=max(1, cfg.prefetch_batches)))
  return it
