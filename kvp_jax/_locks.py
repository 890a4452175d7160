"""Exclusive locks for the writers of a directory (a trace store, an
evaluation's output).

A lock is an fcntl.flock on a small file beside the guarded directory:
`<parent>/.<name>.<role>.lock`. The kernel drops it when the holding process
exits or is killed, so a killed job never leaves a stale lock; the file
itself may stay and is reused. While held, the file names the holder (pid,
host, command, start time) so that a refused writer can say who is in the
way.

Locks are per writer role, not per directory: `Role(index, count)` is
"writer <index> of <count>" (a multi-process job's jax.process_index() and
process_count()). The lock file is keyed by the index, so two writers of
the same index refuse each other (whatever their counts: "writer 0 of 1"
and "writer 0 of 2" would write the same rows), while writers 0..n-1 of
one job hold their locks together and may write disjoint rows of one store.

Within one process a lock is reentrant: opening the same store twice
(e.g. a command that locks before loading the model and a library call
that locks again) shares one lock, released when the last holder closes.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path


class LockError(RuntimeError):
  """Another live process holds the lock of a directory's writer role."""


@dataclasses.dataclass(frozen=True)
class Role:
  """Writer `index` of `count` (0 <= index < count)."""
  index: int = 0
  count: int = 1

  def __post_init__(self):
    if not (isinstance(self.index, int) and isinstance(self.count, int)
            and 0 <= self.index < self.count):
      raise ValueError(f"a writer role needs 0 <= index < count, got "
                       f"index={self.index!r}, count={self.count!r}")

  def __str__(self) -> str:
    return f"writer {self.index} of {self.count}"


SOLE_WRITER = Role(0, 1)

_HELD: dict[Path, "_Held"] = {}
_MUTEX = threading.Lock()


@dataclasses.dataclass
class _Held:
  fd: int
  role: Role
  refs: int


def lock_path(directory: str | os.PathLike[str], role: Role) -> Path:
  """The lock file of `directory`'s writer role (beside the directory, so
  taking the lock never changes the directory's own files)."""
  directory = Path(os.path.abspath(directory))
  return directory.parent / f".{directory.name}.writer-{role.index}.lock"


def _holder_record(role: Role) -> dict:
  return {"pid": os.getpid(), "host": socket.gethostname(),
          "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
          "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "role": str(role)}


def describe_holder(path: Path) -> str:
  """Who holds the lock file at `path`, as the holder wrote it."""
  try:
    info = json.loads(path.read_text(encoding="utf-8"))
    return (f"{info['role']}: pid {info['pid']} on {info['host']}, started "
            f"{info['started']}, command: {info['command']}")
  except (OSError, ValueError, KeyError, TypeError):
    return "a process that has not yet written its name"


class WriterLock:
  """A held writer lock; `release()` (or leaving a `with` block) frees it."""

  def __init__(self, directory: Path, role: Role, path: Path):
    self.directory = directory
    self.role = role
    self.path = path
    self._released = False

  def release(self) -> None:
    """Drops this holder's share; the last one unlocks the file."""
    if self._released:
      return
    self._released = True
    with _MUTEX:
      held = _HELD.get(self.path)
      if held is None:
        return
      held.refs -= 1
      if held.refs == 0:
        del _HELD[self.path]
        fcntl.flock(held.fd, fcntl.LOCK_UN)
        os.close(held.fd)

  def __enter__(self) -> "WriterLock":
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def acquire(directory: str | os.PathLike[str], role: Role = SOLE_WRITER, *,
            what: str = "directory") -> WriterLock:
  """Takes `directory`'s lock for `role` at once, or raises LockError.

  Args:
    directory: the guarded directory (it need not exist yet; its parent is
      created).
    role: the writer role.
    what: what the directory is, for the message ("trace store").
  Raises:
    LockError: a live process holds the role, named in the message.
    OSError: the lock file cannot be created (read-only parent, ...).
  """
  directory = Path(os.path.abspath(directory))
  path = lock_path(directory, role)
  with _MUTEX:
    held = _HELD.get(path)
    if held is not None:
      held.refs += 1
      return WriterLock(directory, role, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise
      raise LockError(
          f"{what} {directory} is being written by another process "
          f"({describe_holder(path)}); wait for it or stop it (lock file "
          f"{path})") from None
    # The lock file cannot be replaced atomically (its inode is the lock),
    # so the holder's name is written in place; a reader that catches it
    # half-written only loses the name.
    data = json.dumps(_holder_record(role)).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    _HELD[path] = _Held(fd, role, 1)
  return WriterLock(directory, role, path)
