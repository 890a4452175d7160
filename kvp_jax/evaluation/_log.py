"""The per-sample log of an evaluation: append-only, keyed for resuming,
optionally folded into a compressed file for committing.

Every (cell, sample, metric) row is appended to <output>/samples.jsonl as
soon as it exists; a rerun skips the keys already there, so a killed
evaluation continues where it stopped. An output directory may also hold
samples.jsonl.gz (`SampleLog.compact`, which the configs of committed
results ask for with eval.compress_log): its rows are read first, the plain
file's after them, a row of a key already read is dropped, and new rows go
to the plain file until the next compaction.

Several processes (kvp_jax.distributed) share the batches: in round r,
process i of P evaluates batch r*P + i, then every process's new rows are
gathered (`distributed.gather_rows`) and process 0 appends them to its
log in batch order, so its log, and the report built from it, are those of
one process. Process 0 alone writes files.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Iterable, Sequence

import jax

from kvp_jax import _files
from kvp_jax import distributed

COMPRESSED_SUFFIX = ".gz"


def _read_compressed(path: Path) -> list[dict]:
  if not path.is_file():
    return []
  with gzip.open(path, "rt", encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


class SampleLog(_files.JsonlLog):
  """Append-only JSONL of per-sample results, keyed for resuming."""

  KEY = ("suite", "sample", "scorer", "budget", "protocol", "allocation",
         "settings", "metric")

  def __init__(self, path: str | Path):
    super().__init__(path)
    frozen = _read_compressed(self.compressed_path)
    self.done = {self._key(r) for r in frozen}
    fresh = [r for r in self.rows if self._key(r) not in self.done]
    self.rows = frozen + fresh
    self.done |= {self._key(r) for r in fresh}
    self._values = {self._key(r): r.get("value") for r in self.rows}

  @property
  def compressed_path(self) -> Path:
    return self.path.with_name(self.path.name + COMPRESSED_SUFFIX)

  def _key(self, row) -> tuple:
    return tuple(str(row.get(k)) for k in self.KEY)

  def has(self, **key) -> bool:
    return self._key(key) in self.done

  def value(self, cell, sample, metric: str):
    """The logged value of (cell, sample, metric), or None where it is not
    logged (or logged by another process)."""
    return self._values.get(self._key(dict(sample=sample, metric=metric,
                                           **cell.key())))

  def has_all(self, cell, samples: Iterable, metrics: Sequence[str]) -> bool:
    """Every (sample, metric) of `cell` (a _grid.Cell) is logged."""
    return all(self.has(sample=s, metric=m, **cell.key())
               for s in samples for m in metrics)

  def add(self, rows: Iterable[dict]) -> None:
    """Appends the rows not logged yet (a batch may be partly done)."""
    rows = self.append(r for r in rows if self._key(r) not in self.done)
    self.done |= {self._key(r) for r in rows}
    self._values.update((self._key(r), r.get("value")) for r in rows)

  def compact(self) -> None:
    """Folds every row into samples.jsonl.gz (written atomically, with a
    fixed timestamp so equal rows give equal bytes), then removes the
    plain file: a kill in between leaves both, and reading drops the
    plain file's rows that the compressed one holds."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as f:
      f.write("".join(json.dumps(r) + "\n" for r in self.rows).encode())
    _files.atomic_write(self.compressed_path, buffer.getvalue())
    self.path.unlink(missing_ok=True)


class MergedLog(SampleLog):
  """The sample log of a multi-process evaluation: process 0's. Every
  process knows every logged key (so each skips what is done); rows added
  here are kept until `merge`, which gathers every process's rows, in
  process order, and appends them on process 0."""

  def __init__(self, path: Path):  # pylint: disable=super-init-not-called
    if distributed.is_primary():
      super().__init__(path)
    else:                         # Process 0's file may be on its disk only.
      self.path, self.sync, self.rows, self.done = Path(path), False, [], set()
      self._values = {}
    self.done = set(distributed.gather_rows(
        sorted(self.done) if distributed.is_primary() else []))
    self._new: list[dict] = []

  def add(self, rows: Iterable[dict]) -> None:
    rows = [r for r in rows if self._key(r) not in self.done]
    self._new += rows
    self.done |= {self._key(r) for r in rows}

  def merge(self) -> None:
    """Every process's rows since the last merge into process 0's file (a
    collective: every process calls it)."""
    rows = distributed.gather_rows(self._new)
    self._new = []
    self.done |= {self._key(r) for r in rows}
    if distributed.is_primary():
      self.append(rows)
      self._values.update((self._key(r), r.get("value")) for r in rows)


def open_log(path: Path) -> SampleLog:
  """The log of one process, or of several (MergedLog)."""
  return (MergedLog if jax.process_count() > 1 else SampleLog)(path)


def process_batches(batches: Sequence, log: SampleLog):
  """This process's batches: every batch when alone; else batch r*P + i in
  round r (process i of P), and after each round the rows are merged
  (`MergedLog.merge`)."""
  count = jax.process_count()
  if count == 1:
    yield from batches
    return
  for start in range(0, len(batches), count):
    if start + jax.process_index() < len(batches):
      yield batches[start + jax.process_index()]
    log.merge()
