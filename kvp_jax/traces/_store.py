"""The trace store: tensorstore zarr3 arrays plus a commit log.

Layout of a store directory:

  metadata.json   schema version, model name + fingerprint, tokenizer,
                  generation settings, layout, seed (written once)
  records.jsonl   one line per committed record: index, id, task, split,
                  length, prompt_length (and num_splits, for a trace with
                  fewer split points than the store's slots)
  progress.json   {"num_records": n}: records 0..n-1 are complete
  commits/        only while several writers record (or after one was
                  killed): one <first index>.json per committed batch,
                  merged into records.jsonl once the records are contiguous
  tokens          [M, T] int32
  split_points    [M, R] int32
  importance      [M, L, K, R, T] float32
  keys, values    [M, L, K, T, H] (bfloat16 by default; absent when the
                  store keeps only what is needed to recompute them)

Every array is sharded by record (one shard file per record and array) and
chunked by (layer, KV head), so a trainer that owns some heads reads only
their chunks. Unwritten chunks (past a trace's length) cost nothing.

Commit protocol: a batch's arrays are written first, then its records.jsonl
lines, then progress.json is replaced atomically. Anything past num_records
is ignored (and truncated on reopen), so a killed writer never leaves a torn
record, and a rerun continues where the last commit stopped.

Several writers (`write_batch`, a multi-process job): each batch has planned
row indices (the trace job's plan is global and deterministic) and is
committed by writing its arrays, then `commits/<first index>.json` (its
records) atomically. Readers see the union of records.jsonl's committed
records and every commit file. When that union is contiguous, writer 0
merges it (`consolidate`: the new records.jsonl lines in index order, then
progress.json, then the commit files are deleted), so a finished store is
the same whichever number of writers recorded it. A commit file left
behind by a merge that was killed repeats records.jsonl exactly and is
dropped.

One writer per role: `create_or_resume` takes the store's writer lock
(kvp_jax._locks, "writer 0 of 1" by default) and holds it until `close()`
or the process ends, so a second job on the same store stops at once with
a LockError naming the holder. Opening checks that every committed record
sits at its own index (records.jsonl line k holds index k, ids unique, as
many lines as progress.json commits); a store that fails is corrupt
(e.g. written by two jobs at once before locks existed) and is reported,
never extended.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

import ml_dtypes
import numpy as np
import tensorstore as ts

from kvp_jax import _files
from kvp_jax import _locks
from kvp_jax.traces._capture import Trace

SCHEMA_VERSION = 1
COMMITS_DIR = "commits"
SPLITS = ("train", "validation", "test")
_KV_CHUNK = 512


class StoreError(ValueError):
  """A store that is missing, damaged, or incompatible with a request."""


@dataclasses.dataclass(frozen=True)
class StoreLayout:
  """Array shapes of a store.

  num_layers, num_kv_heads, head_dim: of the model (L, K, H).
  max_length: T, the longest trace (prompt + continuation) it can hold.
  num_splits: R, importance targets per trace (split points).
  with_kv: keys and values stored (else recomputed by the trainer).
  kv_dtype: "bfloat16" or "float32".
  layer_windows: per layer, the model's sliding window (0: global), so a
    reader knows which tokens a windowed layer's cache can still hold.
  """
  num_layers: int
  num_kv_heads: int
  head_dim: int
  max_length: int
  num_splits: int
  with_kv: bool = True
  kv_dtype: str = "bfloat16"
  layer_windows: tuple[int, ...] | None = None

  def __post_init__(self):
    if self.layer_windows is not None:
      object.__setattr__(self, "layer_windows",
                         tuple(int(w or 0) for w in self.layer_windows))

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    if self.layer_windows is None:
      d.pop("layer_windows")
    else:
      d["layer_windows"] = list(self.layer_windows)
    return d


@dataclasses.dataclass(frozen=True)
class RecordInfo:
  """What records.jsonl says of one record.

  num_splits: how many of the store's split slots are the record's own,
    when fewer than all (the rest repeat its true split, slot 0); None: all.
  split_settings: [num_random_splits, min_prompt_length] of the record when
    its source's differ from the store's `traces` section's; None: the
    section's.
  Neither is written when None, so a store whose traces are all split the
  same way reads as before the fields existed.
  """
  index: int
  id: str
  task: str
  split: str
  length: int
  prompt_length: int
  num_splits: int | None = None
  split_settings: list[int] | None = None

  def to_json(self) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(self).items()
            if v is not None}


def _array_spec(path: Path, shape, dtype: str, shard, chunk, compress: bool,
                create: bool) -> dict[str, Any]:
  spec: dict[str, Any] = {"driver": "zarr3",
                          "kvstore": {"driver": "file", "path": str(path)}}
  if create:
    inner = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if compress:
      inner.append({"name": "zstd", "configuration": {"level": 1}})
    spec["metadata"] = {
        "shape": list(shape), "data_type": dtype,
        "chunk_grid": {"name": "regular",
                       "configuration": {"chunk_shape": list(shard)}},
        "codecs": [{"name": "sharding_indexed", "configuration": {
            "chunk_shape": list(chunk), "codecs": inner,
            "index_codecs": [
                {"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "crc32c"}]}}]}
    spec["create"] = True
  return spec


def _array_shapes(layout: StoreLayout, n: int):
  """name -> (shape, dtype, shard, chunk, compress)."""
  l, k, h = layout.num_layers, layout.num_kv_heads, layout.head_dim
  s = layout.num_splits
  kv_chunk = min(_KV_CHUNK, layout.max_length)
  t = -(-layout.max_length // kv_chunk) * kv_chunk  # Chunks tile the shard.
  shapes = {
      "tokens": ((n, t), "int32", (1, t), (1, t), True),
      "split_points": ((n, s), "int32", (1, s), (1, s), True),
      "importance": ((n, l, k, s, t), "float32", (1, l, k, s, t),
                     (1, 1, 1, s, t), True),
  }
  if layout.with_kv:
    for name in ("keys", "values"):
      shapes[name] = ((n, l, k, t, h), layout.kv_dtype, (1, l, k, t, h),
                      (1, 1, 1, kv_chunk, h), False)
  return shapes


class TraceStore:
  """A trace store on disk. Open with `TraceStore.open` (read) or
  `TraceStore.create_or_resume` (write)."""

  def __init__(self, path: Path, metadata: dict[str, Any],
               records: list[RecordInfo], writable: bool):
    self.path = path
    self.metadata = metadata
    self.layout = StoreLayout(**metadata["layout"])
    self.records = records
    self._by_index = {r.index: r for r in records}
    self._writable = writable
    self._arrays: dict[str, Any] = {}
    self._lock: _locks.WriterLock | None = None

  # --- opening ---------------------------------------------------------

  @classmethod
  def open(cls, path: str | os.PathLike[str]) -> "TraceStore":
    """Opens a finished or partial store for reading its committed records."""
    path = Path(path)
    meta_path = path / "metadata.json"
    if not meta_path.is_file():
      raise StoreError(f"{path} is not a trace store (no metadata.json)")
    metadata = json.loads(meta_path.read_text())
    if metadata.get("schema_version") != SCHEMA_VERSION:
      raise StoreError(f"{path}: schema version "
                       f"{metadata.get('schema_version')} is not "
                       f"{SCHEMA_VERSION}")
    return cls(path, metadata, _all_records(path), writable=False)

  @classmethod
  def create_or_resume(cls, path: str | os.PathLike[str],
                       metadata: dict[str, Any],
                       layout: StoreLayout,
                       role: _locks.Role = _locks.SOLE_WRITER
                       ) -> "TraceStore":
    """Creates a store, or reopens one made with the same model and settings,
    holding its writer lock for `role` until `close()`.

    Args:
      metadata: model name + fingerprint, tokenizer, generation settings,
        seed, data source: everything that decides what a trace holds.
        Everything but "data_source" must equal a reopened store's.
      layout: the arrays' shapes.
      role: this process's writer role (several roles may write one store).
    Raises:
      LockError: another process writes the store in the same role.
      StoreError naming each setting that differs from the existing store's,
        or the first bad record of a corrupt store.
    """
    path = Path(path)
    lock = _locks.acquire(path, role, what="trace store")
    try:
      store = cls._create_or_resume(path, metadata, layout)
    except BaseException:
      lock.release()
      raise
    store._lock = lock
    return store

  @classmethod
  def _create_or_resume(cls, path: Path, metadata: dict[str, Any],
                        layout: StoreLayout) -> "TraceStore":
    metadata = dict(metadata, schema_version=SCHEMA_VERSION,
                    layout=layout.to_dict())
    meta_path = path / "metadata.json"
    if meta_path.is_file():
      existing = json.loads(meta_path.read_text())
      diffs = metadata_differences(existing, metadata,
                                   ignore=("data_source", "created"))
      if diffs:
        raise StoreError(
            f"{path} was made with other settings; refusing to add to it "
            f"(use another store path): " + "; ".join(diffs))
      store = cls(path, existing, _all_records(path, repair=True),
                  writable=True)
    else:
      path.mkdir(parents=True, exist_ok=True)
      _files.atomic_write(path / "progress.json",
                         json.dumps({"num_records": 0}))
      (path / "records.jsonl").touch()
      _files.atomic_write(meta_path, json.dumps(metadata, indent=2,
                                               sort_keys=True))
      store = cls(path, metadata, [], writable=True)
    return store

  # --- arrays ----------------------------------------------------------

  def _array(self, name: str, min_records: int = 0):
    """The tensorstore array `name`, created or grown to min_records."""
    arr = self._arrays.get(name)
    shapes = _array_shapes(self.layout, max(min_records, 1))
    if name not in shapes:
      raise StoreError(f"{self.path} holds no {name!r} (made with "
                       f"with_kv={self.layout.with_kv})")
    shape, dtype, shard, chunk, compress = shapes[name]
    if arr is None:
      exists = (self.path / name / "zarr.json").is_file()
      if not exists and not self._writable:
        raise StoreError(f"{self.path}: array {name!r} is missing")
      arr = ts.open(_array_spec(self.path / name, shape, dtype, shard, chunk,
                                compress, create=not exists)).result()
    if arr.shape[0] < min_records:
      grown = list(arr.shape)
      grown[0] = max(min_records, 2 * arr.shape[0])
      arr = arr.resize(exclusive_max=grown, resize_metadata_only=True).result()
    self._arrays[name] = arr
    return arr

  # --- writing ---------------------------------------------------------

  @property
  def num_records(self) -> int:
    return len(self.records)

  def committed_ids(self) -> set[str]:
    return {r.id for r in self.records}

  @property
  def num_consolidated(self) -> int:
    """Records in records.jsonl (0..n-1); the others are in commit files."""
    return _num_committed(self.path)

  @property
  def has_pending(self) -> bool:
    """Whether some records are in commit files (several writers)."""
    return any(r.index >= self.num_consolidated for r in self.records)

  def append(self, traces: Sequence[Trace],
             infos: Sequence[dict[str, str]]) -> None:
    """Writes and commits a batch of traces after the last record (one
    writer).

    Args:
      traces: the recorded traces.
      infos: per trace {"id", "task", "split"} and optionally
        "split_settings" (RecordInfo).
    """
    if self.has_pending:
      raise StoreError(f"{self.path} has records of several writers; "
                       "commit with write_batch at their planned rows")
    start = self.num_records
    new_records = self._write_arrays(traces, infos, start)
    with open(self.path / "records.jsonl", "a", encoding="utf-8") as f:
      for r in new_records:
        f.write(json.dumps(r.to_json()) + "\n")
      f.flush()
      os.fsync(f.fileno())
    _files.atomic_write(self.path / "progress.json", json.dumps(
        {"num_records": start + len(new_records)}))
    self._add(new_records)

  def write_batch(self, traces: Sequence[Trace],
                  infos: Sequence[dict[str, str]], first_index: int) -> None:
    """Writes and commits a batch at rows first_index.. (one of several
    writers, each writing its own planned rows): the arrays, then
    commits/<first_index>.json, atomically.

    Raises:
      StoreError: a row that is already committed.
    """
    rows = range(first_index, first_index + len(traces))
    taken = [i for i in rows if i in self._by_index]
    if taken or first_index < self.num_consolidated:
      raise StoreError(f"{self.path}: rows {list(rows)} are already "
                       "committed")
    new_records = self._write_arrays(traces, infos, first_index)
    commits = self.path / COMMITS_DIR
    commits.mkdir(exist_ok=True)
    _files.atomic_write(_commit_file(self.path, first_index), json.dumps(
        [r.to_json() for r in new_records]))
    self._add(new_records)

  def reserve(self, num_records: int) -> None:
    """Grows every array to hold num_records rows before several writers
    write them (so no writer resizes an array another one writes). Grows
    as `append` would (doubling), so the arrays' metadata is the same as
    one writer's."""
    if not self._writable:
      raise StoreError(f"{self.path} was opened read-only")
    for name in _array_shapes(self.layout, 1):
      arr = self._array(name)
      size = arr.shape[0]
      while size < num_records:
        size *= 2
      self._array(name, size)

  def consolidate(self) -> bool:
    """Merges the commit files into records.jsonl when every row up to the
    last one is committed (writer 0, once the others are done); returns
    whether the store is now wholly in records.jsonl."""
    n0 = self.num_consolidated
    pending = [r for r in self.records if r.index >= n0]
    if not pending:
      _remove_commits(self.path)
      return True
    if len(self.records) != max(self._by_index) + 1:
      return False                                   # Holes: wait.
    with open(self.path / "records.jsonl", "a", encoding="utf-8") as f:
      for r in pending:
        f.write(json.dumps(r.to_json()) + "\n")
      f.flush()
      os.fsync(f.fileno())
    _files.atomic_write(self.path / "progress.json", json.dumps(
        {"num_records": len(self.records)}))
    _remove_commits(self.path)
    return True

  def refresh(self) -> None:
    """Rereads the committed records (after other writers committed)."""
    self.records = _all_records(self.path)
    self._by_index = {r.index: r for r in self.records}

  def _add(self, new_records: list[RecordInfo]) -> None:
    self.records = sorted(self.records + new_records, key=lambda r: r.index)
    self._by_index.update((r.index, r) for r in new_records)

  def _write_arrays(self, traces: Sequence[Trace],
                    infos: Sequence[dict[str, str]],
                    start: int) -> list[RecordInfo]:
    """Writes the traces' arrays at rows start..; returns their records."""
    if not self._writable:
      raise StoreError(f"{self.path} was opened read-only")
    lay = self.layout
    futures = []
    new_records = []
    for offset, (trace, info) in enumerate(zip(traces, infos, strict=True)):
      i = start + offset
      t = trace.length
      if t > lay.max_length:
        raise StoreError(f"trace {info['id']!r} has {t} tokens, more than the "
                         f"store's max_length {lay.max_length}")
      if info["split"] not in SPLITS:
        raise StoreError(f"unknown split {info['split']!r}")
      s = len(trace.split_points)
      splits = np.full((lay.num_splits,), trace.split_points[0], np.int32)
      splits[:s] = trace.split_points[:lay.num_splits]
      imp = np.zeros((lay.num_layers, lay.num_kv_heads, lay.num_splits, t),
                     np.float32)
      imp[:, :, :s] = trace.importance[:, :, :lay.num_splits]
      for j in range(s, lay.num_splits):  # Unused split slots repeat the first.
        imp[:, :, j] = trace.importance[:, :, 0]
      futures.append(self._array("tokens", i + 1)[i, :t].write(trace.tokens))
      futures.append(self._array("split_points", i + 1)[i].write(splits))
      futures.append(self._array("importance", i + 1)[i, ..., :t].write(imp))
      if lay.with_kv:
        if trace.keys is None:
          raise StoreError("this store keeps keys and values; the trace has "
                           "none")
        dtype = np.dtype(getattr(ml_dtypes, lay.kv_dtype, lay.kv_dtype))
        for name, arr in (("keys", trace.keys), ("values", trace.values)):
          futures.append(self._array(name, i + 1)[i, :, :, :t].write(
              np.asarray(arr).astype(dtype)))
      new_records.append(RecordInfo(
          index=i, id=info["id"], task=info["task"], split=info["split"],
          length=t, prompt_length=trace.prompt_length,
          num_splits=s if s < lay.num_splits else None,
          split_settings=info.get("split_settings")))
    for f in futures:
      f.result()
    return new_records

  # --- reading ---------------------------------------------------------

  def read(self, index: int, *, length: int | None = None,
           layers: slice = slice(None),
           fields: Sequence[str] = ("tokens", "split_points", "importance",
                                    "keys", "values")) -> dict[str, np.ndarray]:
    """One committed record.

    Args:
      index: a committed record's index (with several writers, committed
        records may leave holes until they are merged).
      length: read only the first `length` tokens (default: the record's).
      layers: the layers to read (importance, keys, values).
      fields: which arrays to read.
    Returns:
      tokens [T], split_points [R], importance [L', K, R, T],
      keys/values [L', K, T, H].
    """
    if index not in self._by_index:
      raise IndexError(f"record {index} is not committed ({self.num_records} "
                       "records)")
    t = self._by_index[index].length if length is None else length
    if not self.layout.with_kv:
      fields = [f for f in fields if f not in ("keys", "values")]
    views = {
        "tokens": lambda a: a[index, :t],
        "split_points": lambda a: a[index],
        "importance": lambda a: a[index, layers, :, :, :t],
        "keys": lambda a: a[index, layers, :, :t],
        "values": lambda a: a[index, layers, :, :t],
    }
    futures = {f: views[f](self._array(f)).read() for f in fields}
    return {f: fut.result() for f, fut in futures.items()}

  def trace(self, index: int) -> Trace:
    """A committed record as the Trace it was written from (its own split
    points only; keys and values in the store's dtype)."""
    rec = self._by_index.get(index)
    data = self.read(index)
    own = rec.num_splits or self.layout.num_splits
    return Trace(tokens=data["tokens"], prompt_length=rec.prompt_length,
                 split_points=data["split_points"][:own],
                 importance=data["importance"][:, :, :own],
                 keys=data.get("keys"), values=data.get("values"))

  def records_in(self, split: str) -> list[RecordInfo]:
    return [r for r in self.records if r.split == split]

  def num_bytes(self) -> int:
    """Bytes on disk."""
    return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

  def close(self) -> None:
    """Stops writing: releases the writer lock (reading still works)."""
    self._writable = False
    if self._lock is not None:
      self._lock.release()
      self._lock = None

  def __enter__(self) -> "TraceStore":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __del__(self):
    lock = self.__dict__.get("_lock")
    if lock is not None:
      try:
        lock.release()
      except Exception:  # pylint: disable=broad-except
        pass  # At interpreter exit; the kernel releases the lock anyway.

  def __getstate__(self):  # Picklable for grain workers: reopen arrays lazily.
    state = dict(self.__dict__)
    state["_arrays"] = {}
    state["_lock"] = None
    state["_writable"] = False
    return state


def _num_committed(path: Path) -> int:
  """progress.json's count (checked)."""
  try:
    n = json.loads((path / "progress.json").read_text())["num_records"]
  except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise StoreError(f"{path}: unreadable progress.json ({e})") from e
  if not isinstance(n, int) or n < 0:
    raise StoreError(f"{path}: progress.json commits {n!r} records, not a "
                     "non-negative integer")
  return n


def _commit_file(path: Path, first_index: int) -> Path:
  return path / COMMITS_DIR / f"{first_index:09d}.json"


def _remove_commits(path: Path) -> None:
  commits = path / COMMITS_DIR
  if commits.is_dir():
    for f in commits.iterdir():
      f.unlink()
    commits.rmdir()


def _read_commits(path: Path) -> list[tuple[Path, list[RecordInfo]]]:
  """Every commit file and its records (index order within a file)."""
  out = []
  commits = path / COMMITS_DIR
  for f in sorted(commits.glob("*.json")) if commits.is_dir() else []:
    try:
      rows = [RecordInfo(**r) for r in json.loads(f.read_text())]
    except (json.JSONDecodeError, TypeError) as e:
      raise StoreError(f"{f} is not a commit file ({e}); refusing to read "
                       "the store") from None
    first = int(f.stem)
    if [r.index for r in rows] != list(range(first, first + len(rows))):
      raise StoreError(f"{f} holds indices {[r.index for r in rows]}, not "
                       f"{first}..: the store is corrupt")
    out.append((f, rows))
  return out


def _all_records(path: Path, repair: bool = False) -> list[RecordInfo]:
  """records.jsonl's committed records and every commit file's, by index.

  A commit file whose records repeat records.jsonl's (a merge killed before
  it deleted the file) is ignored (removed with repair). With repair, log
  lines past progress.json are truncated.

  Raises:
    StoreError: a corrupt store (see `_read_records`), or commit files that
      overlap each other or records.jsonl, or repeat an id.
  """
  records = _read_records(path, truncate=repair)
  by_index = {r.index: r for r in records}
  seen = {r.id: r.index for r in records}
  for f, rows in _read_commits(path):
    if all(by_index.get(r.index) == r for r in rows):
      if repair:
        f.unlink()                                  # Already merged.
      continue
    for r in rows:
      if r.index in by_index:
        raise StoreError(f"{path} is corrupt: {f.name} commits row {r.index}, "
                         "which another commit holds")
      if r.id in seen:
        raise StoreError(f"{path} is corrupt: {f.name} repeats the id "
                         f"{r.id!r} of record {seen[r.id]}")
      by_index[r.index] = r
      seen[r.id] = r.index
  return [by_index[i] for i in sorted(by_index)]


def _read_records(path: Path, truncate: bool = False) -> list[RecordInfo]:
  """Committed records, checked; with truncate, drop log lines past the
  commit.

  Raises:
    StoreError: unreadable progress.json, fewer log lines than committed
      records, or a committed record that is malformed, repeats an id or
      sits at another index (a corrupt store).
  """
  n = _num_committed(path)
  log = path / "records.jsonl"
  lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
  if len(lines) < n:
    raise StoreError(f"{path}: records.jsonl has {len(lines)} lines but "
                     f"progress.json commits {n} records")
  records = [_parse_record(path, k, line) for k, line in enumerate(lines[:n])]
  seen: dict[str, int] = {}
  for r in records:
    if r.id in seen:
      raise _corrupt(path, r.index, f"repeats the id {r.id!r} of record "
                     f"{seen[r.id]}")
    seen[r.id] = r.index
  if truncate and len(lines) > n:
    _files.atomic_write(log, "".join(line + "\n" for line in lines[:n]))
  return records


def _corrupt(path: Path, line: int, problem: str) -> StoreError:
  return StoreError(
      f"{path} is corrupt: records.jsonl line {line + 1} {problem} (written "
      "by two jobs at once?); refusing to read or extend it: record the "
      "traces again into a new store")


def _parse_record(path: Path, k: int, line: str) -> RecordInfo:
  """Record k (0-based line k) of records.jsonl, which must hold index k."""
  try:
    record = RecordInfo(**json.loads(line))
  except (json.JSONDecodeError, TypeError) as e:
    raise _corrupt(path, k, f"is not a record ({e})") from None
  if record.index != k:
    raise _corrupt(path, k, f"holds index {record.index!r}, not {k}")
  return record


def metadata_differences(old: dict, new: dict, ignore=(),
                         prefix="") -> list[str]:
  """The settings that differ between two metadata dicts, as
  "key.path: store has A, this run has B" lines (`ignore`: top-level keys)."""
  diffs = []
  for key in sorted(set(old) | set(new)):
    if key in ignore:
      continue
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      diffs += metadata_differences(a, b, (), f"{prefix}{key}.")
    elif a != b:
      diffs.append(f"{prefix}{key}: store has {a!r}, this run has {b!r}")
  return diffs
