"""Trace-store writer locks (one writer per role), its commit protocol
(a killed writer resumes; stores of the old format still open) and the
corrupt-store check."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kvp_jax import _locks
from kvp_jax import traces as traces_lib

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
LAYOUT = traces_lib.StoreLayout(num_layers=2, num_kv_heads=1, head_dim=4,
                                max_length=16, num_splits=1,
                                kv_dtype="float32")
META = {"model": {"name": "fake", "fingerprint": "f0"}, "seed": 0}

# A writer process: records traces s0..s{n-1} (not yet in the store) two at a
# time, as a trace job would; with pause=1 it waits for a line on stdin after
# its first batch. Exit 3 with the message on LockError.
_WRITER = textwrap.dedent("""
    import sys
    from kvp_jax import _locks
    from kvp_jax import traces
    from tests.traces.test_store_lock import LAYOUT, META, fake_trace
    path, n, pause = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    try:
      store = traces.TraceStore.create_or_resume(path, META, LAYOUT)
    except _locks.LockError as e:
      print(e, file=sys.stderr)
      sys.exit(3)
    todo = [i for i in range(n) if f"s{i}" not in store.committed_ids()]
    for k in range(0, len(todo), 2):
      batch = todo[k:k + 2]
      store.append([fake_trace(i) for i in batch],
                   [{"id": f"s{i}", "task": "t", "split": "train"}
                    for i in batch])
      if k == 0 and pause:
        print("writing", flush=True)
        sys.stdin.readline()
""")

# Holds a writer role's lock until killed.
_HOLDER = textwrap.dedent("""
    import sys, time
    from kvp_jax import _locks
    lock = _locks.acquire(sys.argv[1], _locks.Role(int(sys.argv[2]),
                                                   int(sys.argv[3])))
    print("held", flush=True)
    time.sleep(600)
""")


def fake_trace(i: int) -> traces_lib.Trace:
  """A deterministic trace of 6 + i % 5 tokens (no model needed)."""
  rng = np.random.default_rng(i)
  t = 6 + i % 5
  return traces_lib.Trace(
      tokens=rng.integers(0, 100, t).astype(np.int32), prompt_length=t - 2,
      split_points=np.array([t - 2], np.int32),
      importance=rng.random((2, 1, 1, t)).astype(np.float32),
      keys=rng.random((2, 1, t, 4)).astype(np.float32),
      values=rng.random((2, 1, t, 4)).astype(np.float32))


def _contents(path):
  store = traces_lib.TraceStore.open(path)
  out = {"records": [r.__dict__ for r in store.records]}
  for r in store.records:
    out.update({f"{r.index}/{k}": np.asarray(v).tolist()
                for k, v in store.read(r.index).items()})
  return out


def _start(script, *args):
  return subprocess.Popen([sys.executable, "-c", script, *map(str, args)],
                          cwd=ROOT, env=ENV, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _wait_for(proc, word):
  line = proc.stdout.readline()
  assert word in line, (line, proc.stderr.read() if proc.poll() else "")


@pytest.fixture
def holder():
  """Starts a process holding a role's lock; kills it at the end."""
  procs = []

  def start(directory, index=0, count=1):
    proc = _start(_HOLDER, directory, index, count)
    procs.append(proc)
    _wait_for(proc, "held")
    return proc
  yield start
  for proc in procs:
    proc.kill()
    proc.wait()


def test_second_writer_of_a_role_refuses_at_once(tmp_path):
  a = _start(_WRITER, tmp_path / "s", 12, 1)
  _wait_for(a, "writing")  # A has committed its first batch and goes on.
  b = _start(_WRITER, tmp_path / "s", 12, 0)
  _, err = b.communicate(timeout=60)
  assert b.returncode == 3, err
  assert a.poll() is None, "the first writer should still be writing"
  assert f"trace store {tmp_path / 's'} is being written" in err
  assert f"pid {a.pid}" in err and "writer 0 of 1" in err
  assert "started 20" in err and "command: python" in err
  _, err = a.communicate("go\n", timeout=60)
  assert a.returncode == 0, err
  one = _start(_WRITER, tmp_path / "one", 12, 0)
  _, err = one.communicate(timeout=60)
  assert one.returncode == 0, err
  assert _contents(tmp_path / "s") == _contents(tmp_path / "one")
  assert traces_lib.TraceStore.open(tmp_path / "s").num_records == 12


def test_killed_writer_leaves_no_stale_lock(tmp_path, holder):
  proc = holder(tmp_path / "s")
  with pytest.raises(_locks.LockError, match=f"pid {proc.pid}"):
    traces_lib.TraceStore.create_or_resume(tmp_path / "s", META, LAYOUT)
  assert not (tmp_path / "s").exists()  # Refused before touching the store.
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  with traces_lib.TraceStore.create_or_resume(tmp_path / "s", META,
                                              LAYOUT) as store:
    store.append([fake_trace(0)], [{"id": "s0", "task": "t",
                                    "split": "train"}])
  assert traces_lib.TraceStore.open(tmp_path / "s").num_records == 1


def test_different_roles_cooperate(tmp_path, holder):
  proc = holder(tmp_path / "s", 1, 2)
  store = traces_lib.TraceStore.create_or_resume(
      tmp_path / "s", META, LAYOUT, role=_locks.Role(0, 2))
  store.close()
  with pytest.raises(_locks.LockError, match=f"writer 1 of 2: pid {proc.pid}"):
    traces_lib.TraceStore.create_or_resume(tmp_path / "s", META, LAYOUT,
                                           role=_locks.Role(1, 2))
  with pytest.raises(_locks.LockError):  # Same index, other count: overlaps.
    _locks.acquire(tmp_path / "s", _locks.Role(1, 3))
  with pytest.raises(ValueError, match="0 <= index < count"):
    _locks.Role(2, 2)


def test_lock_is_reentrant_within_a_process(tmp_path):
  first = _locks.acquire(tmp_path / "d")
  second = _locks.acquire(tmp_path / "d")
  first.release()
  second.release()
  # Released for good: another process can take it now.
  proc = _start(_HOLDER, tmp_path / "d", 0, 1)
  try:
    _wait_for(proc, "held")
  finally:
    proc.kill()
    proc.wait()


def _write(path, n):
  with traces_lib.TraceStore.create_or_resume(path, META, LAYOUT) as store:
    store.append([fake_trace(i) for i in range(n)],
                 [{"id": f"s{i}", "task": "t", "split": "train"}
                  for i in range(n)])


@pytest.mark.parametrize("damage,message", [
    ("swap", "records.jsonl line 2 holds index 2, not 1"),
    ("repeat", "records.jsonl line 3 repeats the id 's0' of record 0"),
    ("garbage", "records.jsonl line 2 is not a record"),
])
def test_corrupt_store_is_reported_not_extended(tmp_path, damage, message):
  path = tmp_path / "s"
  _write(path, 4)
  log = path / "records.jsonl"
  lines = log.read_text().splitlines()
  if damage == "swap":
    lines[1], lines[2] = lines[2], lines[1]
  elif damage == "repeat":
    record = json.loads(lines[0])
    record["index"] = 2
    lines[2] = json.dumps(record)
  else:
    lines[1] = "{not json"
  log.write_text("".join(line + "\n" for line in lines))
  stamps = {p: p.stat().st_mtime_ns for p in path.rglob("*")}
  with pytest.raises(traces_lib.StoreError, match=message) as e:
    traces_lib.TraceStore.open(path)
  assert str(path) in str(e.value) and "corrupt" in str(e.value)
  with pytest.raises(traces_lib.StoreError, match=message):
    traces_lib.TraceStore.create_or_resume(path, META, LAYOUT)
  assert stamps == {p: p.stat().st_mtime_ns for p in path.rglob("*")}
  _locks.acquire(path).release()  # The refused writer let go of its lock.


def test_killed_writer_resumes_and_merges(tmp_path):
  """The sole writer commits like one of several (commit files); killed,
  its commits are read, the rerun continues and the merge leaves the store
  one uninterrupted writer leaves."""
  a = _start(_WRITER, tmp_path / "s", 12, 1)
  _wait_for(a, "writing")
  a.send_signal(signal.SIGKILL)
  a.wait()
  killed = traces_lib.TraceStore.open(tmp_path / "s")
  assert [r.id for r in killed.records] == ["s0", "s1"]
  assert killed.has_pending and killed.num_consolidated == 0
  rerun = _start(_WRITER, tmp_path / "s", 12, 0)
  _, err = rerun.communicate(timeout=60)
  assert rerun.returncode == 0, err
  with traces_lib.TraceStore.create_or_resume(tmp_path / "s", META, LAYOUT):
    pass                                    # Closing merges.
  assert not (tmp_path / "s" / "commits").exists()
  _write(tmp_path / "one", 12)
  assert _contents(tmp_path / "s") == _contents(tmp_path / "one")
  for name in ("records.jsonl", "tokens/zarr.json", "keys/c/11/0/0/0/0"):
    assert ((tmp_path / "s" / name).read_bytes()
            == (tmp_path / "one" / name).read_bytes()), name


def _make_old_format(path, committed, lines):
  """Turns a store into the format before commit files: `lines` lines in
  records.jsonl (the last one torn when past `committed`), progress.json
  committing `committed`."""
  log = path / "records.jsonl"
  kept = log.read_text().splitlines()[:lines]
  text = "".join(line + "\n" for line in kept)
  if lines > committed:
    text = text[:-10]                       # A torn append.
  log.write_text(text)
  (path / "progress.json").write_text(
      json.dumps({"num_records": committed}))


def test_old_format_store_opens_and_is_converted_by_a_writer(tmp_path):
  path = tmp_path / "s"
  _write(path, 4)
  _make_old_format(path, 2, 3)
  assert [r.id for r in traces_lib.TraceStore.open(path).records] == [
      "s0", "s1"]
  with traces_lib.TraceStore.create_or_resume(path, META, LAYOUT) as store:
    assert not (path / "progress.json").exists()
    assert len((path / "records.jsonl").read_text().splitlines()) == 2
    store.append([fake_trace(i) for i in (2, 3)],
                 [{"id": f"s{i}", "task": "t", "split": "train"}
                  for i in (2, 3)])
  _write(tmp_path / "one", 4)
  assert _contents(path) == _contents(tmp_path / "one")


def test_progress_beyond_the_log_is_reported(tmp_path):
  _write(tmp_path / "s", 2)                 # An old-format store, damaged.
  (tmp_path / "s" / "progress.json").write_text('{"num_records": 5}')
  with pytest.raises(traces_lib.StoreError,
                     match="records.jsonl has 2 lines but progress.json "
                           "commits 5"):
    traces_lib.TraceStore.open(tmp_path / "s")


def test_full_disk_leaves_no_temporary_files(tmp_path, monkeypatch):
  import errno
  from kvp_jax import _files

  def no_space(fd):
    raise OSError(errno.ENOSPC, "No space left on device")
  monkeypatch.setattr(_files.os, "fsync", no_space)
  with pytest.raises(OSError, match="No space left"):
    traces_lib.TraceStore.create_or_resume(tmp_path / "s", META, LAYOUT)
  assert not list((tmp_path / "s").glob("*tmp*"))
  assert not list((tmp_path / "s").glob(".*"))
  monkeypatch.undo()
  _write(tmp_path / "s", 1)  # The lock was released; the rerun works.
  assert traces_lib.TraceStore.open(tmp_path / "s").num_records == 1
