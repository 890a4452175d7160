"""The trace store: tensorstore zarr3 arrays plus its records.

Layout of a store directory:

  metadata.json   schema version, model name + fingerprint, tokenizer,
                  generation settings, layout, seed (written once)
  records.jsonl   the merged records, one line each in index order: index,
                  id, task, split, length, prompt_length (and num_splits,
                  for a trace with fewer split points than the store's
                  slots); always replaced whole, atomically
  commits/        one <first index>.json per committed batch not merged
                  into records.jsonl yet
  tokens          [M, T] int32
  split_points    [M, R] int32
  importance      [M, L, K, R, T] float32
  keys, values    [M, L, K, T, H] (bfloat16 by default; absent when the
                  store keeps only what is needed to recompute them)

Every array is sharded by record (one shard file per record and array) and
chunked by (layer, KV head), so a trainer that owns some heads reads only
their chunks. Unwritten chunks (past a trace's length) cost nothing.

Commit protocol, the same for one writer and for several (a multi-process
job, each writer at the rows its plan gives it; `append` takes the rows
after the last record):

1. the writer writes a batch's arrays at its rows;
2. it commits the batch by writing `commits/<first row>.json` (the batch's
   records) atomically: a batch is committed if and only if its commit
   file exists, so a killed writer leaves uncommitted array rows (never
   read; the rerun writes them again) and at most a temporary file;
3. readers see the union of records.jsonl and the commit files;
4. the merge (`consolidate`: the sole writer on close, writer 0 once every
   writer is done and the rows have no holes) replaces records.jsonl with
   every record, then deletes commits/. A merge killed in between leaves
   commit files that repeat records.jsonl; they are ignored and deleted.

So a finished store is the same whichever number of writers recorded it.

Stores written before this protocol also have progress.json: only its
count of records.jsonl lines were committed (the rest, a killed append's,
are ignored). They read as before; a writer opening one rewrites
records.jsonl with the committed lines and deletes progress.json.

One writer per role: `create_or_resume` takes the store's writer lock
(kvp_jax._locks, "writer 0 of 1" by default) and holds it until `close()`
or the process ends, so a second job on the same store stops at once with
a LockError naming the holder. Opening checks that every record sits at
its own index (records.jsonl line k holds index k, ids unique, commit
files disjoint from each other and from records.jsonl); a store that fails
is corrupt (e.g. written by two jobs at once before locks existed) and is
reported, never extended.
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
RECORDS_FILE = "records.jsonl"
COMMITS_DIR = "commits"
LEGACY_PROGRESS_FILE = "progress.json"
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
               writable: bool):
    self.path = path
    self.metadata = metadata
    self.layout = StoreLayout(**metadata["layout"])
    self.records: list[RecordInfo] = []
    self._by_index: dict[int, RecordInfo] = {}
    self._num_merged = 0
    self._writable = writable
    self._arrays: dict[str, Any] = {}
    self._lock: _locks.WriterLock | None = None
    self._role: _locks.Role | None = None
    self.refresh()

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
    return cls(path, metadata, writable=False)

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
    store._lock, store._role = lock, role
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
      store = cls(path, existing, writable=True)  # Checked before repairs.
      if (path / LEGACY_PROGRESS_FILE).exists():
        store._convert_legacy()
    else:
      path.mkdir(parents=True, exist_ok=True)
      _files.atomic_write(path / RECORDS_FILE, "")
      _files.atomic_write(meta_path, json.dumps(metadata, indent=2,
                                               sort_keys=True))
      store = cls(path, metadata, writable=True)
    return store

  def _convert_legacy(self) -> None:
    """Turns a store of the progress.json format into the commit-file one:
    records.jsonl keeps the committed lines only, then progress.json goes
    (killed in between, both formats read the same records)."""
    _write_records(self.path, self.records[:self._num_merged])
    (self.path / LEGACY_PROGRESS_FILE).unlink()

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
      grown[0] = _grown(arr.shape[0], min_records)
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
    """Records merged into records.jsonl (0..n-1); the others are in
    commit files."""
    return self._num_merged

  @property
  def has_pending(self) -> bool:
    """Whether some records are in commit files, not merged yet."""
    return len(self.records) > self._num_merged

  def append(self, traces: Sequence[Trace],
             infos: Sequence[dict[str, str]]) -> None:
    """Writes and commits a batch of traces after the last record (one
    writer): `write_batch` at the next row.

    Args:
      traces: the recorded traces.
      infos: per trace {"id", "task", "split"} and optionally
        "split_settings" (RecordInfo).
    Raises:
      StoreError: the records have holes (several writers' rows missing).
    """
    n = self.num_records
    if n and self.records[-1].index != n - 1:
      raise StoreError(f"{self.path} has rows missing between records of "
                       "several writers; commit with write_batch at their "
                       "planned rows")
    self.write_batch(traces, infos, n)

  def write_batch(self, traces: Sequence[Trace],
                  infos: Sequence[dict[str, str]], first_index: int) -> None:
    """Writes and commits a batch at rows first_index..: the arrays, then
    commits/<first_index>.json, atomically (the store's one commit).

    Raises:
      StoreError: a row that is already committed.
    """
    rows = range(first_index, first_index + len(traces))
    taken = [i for i in rows if i in self._by_index]
    if taken or first_index < self._num_merged:
      raise StoreError(f"{self.path}: rows {list(rows)} are already "
                       "committed")
    new_records = self._write_arrays(traces, infos, first_index)
    _files.atomic_write(_commit_file(self.path, first_index), json.dumps(
        [r.to_json() for r in new_records]))
    self._add(new_records)

  def reserve(self, num_records: int) -> None:
    """Grows every array to hold num_records rows before they are written
    (so no writer resizes an array another one writes). Grows as writing
    would (doubling), so the arrays' metadata is the same whichever number
    of writers wrote them."""
    if not self._writable:
      raise StoreError(f"{self.path} was opened read-only")
    for name in _array_shapes(self.layout, 1):
      arr = self._array(name)
      self._array(name, _grown(arr.shape[0], num_records))

  def consolidate(self) -> bool:
    """Merges the commit files into records.jsonl when every row up to the
    last one is committed (the sole writer, or writer 0 once the others are
    done); returns whether the store is now wholly in records.jsonl."""
    if not self._writable:
      raise StoreError(f"{self.path} was opened read-only")
    self.refresh()                           # Every writer's commits.
    if self.has_pending:
      if len(self.records) != self.records[-1].index + 1:
        return False                                 # Holes: wait.
      _write_records(self.path, self.records)
      self._num_merged = len(self.records)
    _remove_commits(self.path)
    return True

  def refresh(self) -> None:
    """Rereads the committed records (after other writers committed)."""
    self.records, self._num_merged = _all_records(self.path)
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
    """Stops writing: the sole writer merges its commits (`consolidate`),
    then the writer lock is released (reading still works)."""
    try:
      if self._writable and self._role == _locks.SOLE_WRITER:
        self.consolidate()
    finally:
      self._release()

  def _release(self) -> None:
    self._writable = False
    if self._lock is not None:
      self._lock.release()
      self._lock = None

  def __enter__(self) -> "TraceStore":
    return self

  def __exit__(self, exc_type, *exc) -> None:
    if exc_type is None:
      self.close()
    else:
      self._release()          # Failing (a full disk?): no more writes.

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
    state["_role"] = None
    state["_writable"] = False
    return state


def _grown(size: int, need: int) -> int:
  """An array's row count doubled until it holds `need` rows."""
  size = max(size, 1)
  while size < need:
    size *= 2
  return size


def _write_records(path: Path, records: Sequence[RecordInfo]) -> None:
  """Replaces records.jsonl with `records`, atomically."""
  _files.atomic_write(path / RECORDS_FILE, "".join(
      json.dumps(r.to_json()) + "\n" for r in records))


def _commit_file(path: Path, first_index: int) -> Path:
  return path / COMMITS_DIR / f"{first_index:09d}.json"


def _remove_commits(path: Path) -> None:
  """Deletes commits/ (its commit files and any writer's temporary files)."""
  commits = path / COMMITS_DIR
  if commits.is_dir():
    for f in commits.iterdir():
      f.unlink(missing_ok=True)
    commits.rmdir()


def _read_commits(path: Path) -> list[tuple[Path, list[RecordInfo]]]:
  """Every commit file and its records (index order within a file). A file
  that a merge deletes while this reads is skipped: its records are in
  records.jsonl, read after this."""
  out = []
  commits = path / COMMITS_DIR
  for f in sorted(commits.glob("*.json")) if commits.is_dir() else []:
    try:
      text = f.read_text(encoding="utf-8")
    except FileNotFoundError:
      continue
    try:
      rows = [RecordInfo(**r) for r in json.loads(text)]
    except (json.JSONDecodeError, TypeError) as e:
      raise StoreError(f"{f} is not a commit file ({e}); refusing to read "
                       "the store") from None
    first = int(f.stem)
    if [r.index for r in rows] != list(range(first, first + len(rows))):
      raise StoreError(f"{f} holds indices {[r.index for r in rows]}, not "
                       f"{first}..: the store is corrupt")
    out.append((f, rows))
  return out


def _all_records(path: Path) -> tuple[list[RecordInfo], int]:
  """Every committed record, by index, and how many are merged into
  records.jsonl: its records and every commit file's. A commit file whose
  records repeat records.jsonl's (a merge killed before it deleted the
  file) is ignored.

  Raises:
    StoreError: a corrupt store (see `_read_records`), or commit files that
      overlap each other or records.jsonl, or repeat an id.
  """
  commits = _read_commits(path)  # First: a merge moves their records.
  merged = _read_records(path)
  by_index = {r.index: r for r in merged}
  seen = {r.id: r.index for r in merged}
  for f, rows in commits:
    if all(by_index.get(r.index) == r for r in rows):
      continue                                      # Already merged.
    for r in rows:
      if r.index in by_index:
        raise StoreError(f"{path} is corrupt: {f.name} commits row {r.index}, "
                         "which another commit holds")
      if r.id in seen:
        raise StoreError(f"{path} is corrupt: {f.name} repeats the id "
                         f"{r.id!r} of record {seen[r.id]}")
      by_index[r.index] = r
      seen[r.id] = r.index
  return [by_index[i] for i in sorted(by_index)], len(merged)


def _read_records(path: Path) -> list[RecordInfo]:
  """records.jsonl's records, checked (of a store of the old format, the
  lines progress.json commits).

  Raises:
    StoreError: a malformed record, one that repeats an id or sits at
      another index (a corrupt store); of the old format, an unreadable
      progress.json or fewer lines than it commits.
  """
  log = path / RECORDS_FILE
  lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
  if (path / LEGACY_PROGRESS_FILE).exists():
    n = _legacy_count(path)
    if len(lines) < n:
      raise StoreError(f"{path}: records.jsonl has {len(lines)} lines but "
                       f"progress.json commits {n} records")
    lines = lines[:n]
  records = [_parse_record(path, k, line) for k, line in enumerate(lines)]
  seen: dict[str, int] = {}
  for r in records:
    if r.id in seen:
      raise _corrupt(path, r.index, f"repeats the id {r.id!r} of record "
                     f"{seen[r.id]}")
    seen[r.id] = r.index
  return records


def _legacy_count(path: Path) -> int:
  """progress.json's count of committed records (old format), checked."""
  try:
    n = json.loads((path / LEGACY_PROGRESS_FILE).read_text())["num_records"]
  except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise StoreError(f"{path}: unreadable progress.json ({e})") from e
  if not isinstance(n, int) or n < 0:
    raise StoreError(f"{path}: progress.json commits {n!r} records, not a "
                     "non-negative integer")
  return n


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
