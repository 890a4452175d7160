"""Writing files so that a killed job never leaves a half-written one.

atomic_write / atomic_output: the new content goes to a temporary file with
a unique name in the target's own directory (so two writers never share a
temporary file and the rename never crosses a file system), is flushed and
fsynced, and then replaces the target in one os.replace. A reader sees the
old file or the new one, never a mixture.

JsonlLog: an append-only log of JSON records, one per line, that a killed
writer may leave with a torn last line; opening it keeps the whole lines
(rewriting the file atomically when it drops a torn one) so appends resume
cleanly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
  """Yields a temporary path to write `path`'s new content to; on a clean
  exit it is fsynced and renamed over `path`, on an error it is removed.

  The file gets the mode a plain open() would give (0666 less the umask),
  not mkstemp's 0600.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                             suffix=".tmp")
  os.close(fd)
  tmp_path = Path(tmp)
  try:
    yield tmp_path
    with open(tmp_path, "rb+") as f:
      os.fsync(f.fileno())
    os.chmod(tmp_path, 0o666 & ~_umask())
    os.replace(tmp_path, path)
  except BaseException:
    tmp_path.unlink(missing_ok=True)
    raise


def save_figure(fig, path: str | os.PathLike[str], dpi: int) -> None:
  """Writes a matplotlib figure as a PNG atomically, then closes it (also
  when writing fails)."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  try:
    with atomic_output(path) as tmp:
      fig.savefig(tmp, dpi=dpi, format="png")
  finally:
    plt.close(fig)


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> None:
  """Replaces `path` with `data` (str is written as UTF-8) atomically."""
  with atomic_output(path) as tmp:
    if isinstance(data, str):
      tmp.write_text(data, encoding="utf-8")
    else:
      tmp.write_bytes(data)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *,
                      indent: int | None = 2, **kwargs) -> None:
  """Replaces `path` with `obj` as JSON atomically."""
  atomic_write(path, json.dumps(obj, indent=indent, **kwargs))


class JsonlLog:
  """An append-only JSONL log that survives a writer killed mid-line.

  rows: every whole record, in file order. `append` writes whole lines,
  flushed (and fsynced with sync=True), so after a kill at most the last
  line is torn; the next open drops it.
  """

  def __init__(self, path: str | os.PathLike[str], *, sync: bool = False):
    self.path = Path(path)
    self.sync = sync
    self.rows: list[dict] = []
    if not self.path.exists():
      return
    text = self.path.read_text(encoding="utf-8")
    torn = bool(text) and not text.endswith("\n")
    for line in text.splitlines():
      if not line.strip():
        continue
      try:
        self.rows.append(json.loads(line))
      except json.JSONDecodeError:
        torn = True
    if torn:
      logging.warning("%s: dropping a torn line left by a killed writer",
                      self.path)
      atomic_write(self.path, "".join(json.dumps(r) + "\n"
                                      for r in self.rows))

  def append(self, rows: Iterable[dict]) -> list[dict]:
    """Appends records as whole lines; returns those written."""
    rows = list(rows)
    if not rows:
      return rows
    self.path.parent.mkdir(parents=True, exist_ok=True)
    with open(self.path, "a", encoding="utf-8") as f:
      f.write("".join(json.dumps(r) + "\n" for r in rows))
      f.flush()
      if self.sync:
        os.fsync(f.fileno())
    self.rows += rows
    return rows


def read_jsonl(path: str | os.PathLike[str]) -> list[dict]:
  """Every record of a JSONL file (blank lines skipped).

  Raises:
    ValueError: a line that is not JSON, naming the file and the line.
  """
  rows = []
  text = Path(path).read_text(encoding="utf-8")
  for n, line in enumerate(text.splitlines(), 1):
    if line.strip():
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        raise ValueError(f"{path}: line {n} is not JSON") from None
  return rows
