"""A full or read-only disk: one `error:` line, tracebacks in a file,
nothing committed lost, and the rerun resumes.

The command-line cases run a tiny main under kvp_jax._cli_run.run in a
subprocess whose threads fail as orbax's checkpoint threads do (an uncaught
OSError, an error logged with its traceback); the store and log cases make
the atomic write or an append fail part-way with ENOSPC; where a tmpfs can
be mounted (root), a real trace store fills a tiny one, then finds it
read-only, then resumes.
"""

import errno
import os
from pathlib import Path
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kvp_jax import _cli_run
from kvp_jax import _files
from kvp_jax import traces as traces_lib
from tests.traces.test_store_lock import _contents
from tests.traces.test_store_lock import fake_trace
from tests.traces.test_store_lock import LAYOUT
from tests.traces.test_store_lock import META

ROOT = Path(__file__).resolve().parents[1]

# argv: mode, then flags. Threads fail like orbax's save threads: one logs
# its error with a traceback (many times), one dies of an uncaught OSError.
_MAIN = textwrap.dedent("""
    import errno, sys, threading
    from absl import flags, logging
    from kvp_jax import _cli_run
    flags.DEFINE_string("workdir", None, "Run directory.")
    MODE = sys.argv.pop(1)
    FULL = OSError(errno.ENOSPC, "No space left on device",
                   "/data/run/checkpoints/7/state")

    def saver():
      for _ in range(50):
        try:
          raise FULL
        except OSError:
          logging.error("Failed to run Handler Commit operations in "
                        "background save thread", exc_info=True)

    def dying():
      raise FULL

    def main(argv):
      threads = [threading.Thread(target=saver),
                 threading.Thread(target=dying, name="commit")]
      if MODE == "other":
        threads = [threading.Thread(target=lambda: 1 / 0, name="bug")]
      for t in threads:
        t.start()
      for t in threads:
        t.join()
      if MODE == "wrapped":
        logging.error("Save Finalize thread (save_finalize) failed.")
        raise RuntimeError("checkpoint save failed") from FULL
      if MODE == "read_only":
        raise OSError(errno.EROFS, "Read-only file system",
                      "/data/run/summary.json")
      print("main finished")            # MODE "returns" or "other".

    _cli_run.run(main)
""")


def _cli(tmp_path, mode, *args):
  """(exit status, stderr lines) of the tiny main."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
             TMPDIR=str(tmp_path))
  proc = subprocess.run([sys.executable, "-c", _MAIN, mode, *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=120, check=False)
  return proc.returncode, proc.stderr.splitlines()


def test_full_disk_is_one_line_and_tracebacks_go_to_the_workdir(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  rc, lines = _cli(tmp_path, "wrapped", f"--workdir={workdir}")
  assert rc == 2 and len(lines) == 1, lines
  log = workdir / _cli_run.ERROR_LOG_NAME
  assert lines[0] == (
      "error: /data/run/checkpoints/7/state: No space left on device (free "
      "some space and rerun: finished work is kept; tracebacks in "
      f"{log})")
  text = log.read_text()
  assert "Exception in thread commit" in text
  assert text.count("Failed to run Handler Commit") == 50
  assert "Save Finalize thread (save_finalize) failed." in text
  assert "RuntimeError: checkpoint save failed" in text   # Main's too.
  assert text.count("Traceback") >= 52


def test_without_a_workdir_tracebacks_go_to_the_temporary_directory(
    tmp_path):
  rc, lines = _cli(tmp_path, "read_only")
  assert rc == 2 and len(lines) == 1, lines
  assert lines[0].startswith("error: /data/run/summary.json: Read-only file "
                             "system (write elsewhere")
  logs = list(tmp_path.glob("kvp_jax-errors-*.log"))
  assert len(logs) == 1 and f"tracebacks in {logs[0]})" in lines[0]
  assert "Exception in thread commit" in logs[0].read_text()


def test_a_thread_that_failed_on_the_disk_fails_the_command(tmp_path):
  rc, lines = _cli(tmp_path, "returns")
  assert rc == 2 and len(lines) == 1, lines
  assert lines[0].startswith("error: a background thread failed: "
                             "/data/run/checkpoints/7/state: No space left")


def test_other_thread_failures_leave_one_warning(tmp_path):
  rc, lines = _cli(tmp_path, "other")
  assert rc == 0 and len(lines) == 1, lines
  assert lines[0].startswith("warning: 1 background thread(s) failed "
                             f"(tracebacks in {tmp_path}/kvp_jax-errors-")
  log = next(tmp_path.glob("kvp_jax-errors-*.log")).read_text()
  assert "Exception in thread bug" in log and "ZeroDivisionError" in log


def test_debug_shows_the_tracebacks(tmp_path):
  rc, lines = _cli(tmp_path, "wrapped", "--debug")
  assert rc == 1
  # Python's own thread hook writes its header in pieces, which the other
  # thread's log lines may split: look for pieces that each write whole.
  text = "\n".join(lines)
  assert "Exception in thread " in text and ", in dying" in text
  assert "RuntimeError: checkpoint save failed" in text
  assert not list(tmp_path.glob("kvp_jax-errors-*.log"))


def test_disk_errors_behind_other_errors_are_named():
  wrapped = RuntimeError("save failed")
  wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device", "/x")
  assert _cli_run.is_reported(wrapped)
  assert _cli_run.message(wrapped) == (
      "/x: No space left on device (free some space and rerun: finished "
      "work is kept)")
  ts = ValueError("RESOURCE_EXHAUSTED: Error writing \"w/0.0\" in OCDBT "
                  "database at local file \"/s/ocdbt/\": Failed writing: "
                  "\"/s/ocdbt/d/0d31\": Failed to write 2708896 bytes to "
                  "file 6: No space left on device [os_error_code='28']")
  assert _cli_run.message(ts) == (
      "/s/ocdbt/d/0d31: No space left on device (free some space and rerun: "
      "finished work is kept)")
  assert _cli_run.message(ValueError("bad value")) == "bad value"


def _batch(rows):
  return ([fake_trace(i) for i in rows],
          [{"id": f"s{i}", "task": "t", "split": "train"} for i in rows])


def _fsync_fails_after(monkeypatch, calls):
  """Makes the atomic write's fsync fail with ENOSPC after `calls` calls
  (the temporary file written, not yet renamed)."""
  real = _files.os.fsync
  count = [0]

  def fsync(fd):
    count[0] += 1
    if count[0] > calls:
      raise OSError(errno.ENOSPC, "No space left on device")
    real(fd)
  monkeypatch.setattr(_files.os, "fsync", fsync)


def _ids(path):
  return [r.id for r in traces_lib.TraceStore.open(path).records]


@pytest.mark.parametrize("fail_at", ["commit", "merge"])
def test_full_disk_keeps_the_store_and_the_rerun_resumes(tmp_path,
                                                         monkeypatch,
                                                         fail_at):
  path = tmp_path / "s"
  with pytest.raises(OSError, match="No space left"):
    with traces_lib.TraceStore.create_or_resume(path, META, LAYOUT) as store:
      store.append(*_batch([0, 1]))
      _fsync_fails_after(monkeypatch, 0 if fail_at == "commit" else 1)
      store.append(*_batch([2, 3]))     # Its commit or the merge fails.
      store.close()
  monkeypatch.undo()
  committed = ["s0", "s1"] + (["s2", "s3"] if fail_at == "merge" else [])
  assert _ids(path) == committed
  assert not [p for p in path.rglob("*") if p.name.endswith(".tmp")]
  with traces_lib.TraceStore.create_or_resume(path, META, LAYOUT) as store:
    todo = [i for i in range(6) if f"s{i}" not in store.committed_ids()]
    store.append(*_batch(todo))
  assert _ids(path) == [f"s{i}" for i in range(6)]
  assert not (path / "commits").exists()
  one = tmp_path / "one"
  with traces_lib.TraceStore.create_or_resume(one, META, LAYOUT) as store:
    store.append(*_batch(range(6)))
  assert (path / "records.jsonl").read_bytes() == (
      one / "records.jsonl").read_bytes()
  assert _contents(path) == _contents(one)


class _FullAfter:
  """A text file whose writes stop part-way with ENOSPC after `room`
  characters (what a full disk does to an append)."""

  def __init__(self, f, room):
    self._f, self._room = f, room

  def write(self, text):
    self._f.write(text[:self._room])
    if len(text) > self._room:
      self._f.flush()
      raise OSError(errno.ENOSPC, "No space left on device")
    self._room -= len(text)

  def __getattr__(self, name):
    return getattr(self._f, name)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._f.close()


def test_full_disk_mid_append_keeps_the_log_and_the_rerun_resumes(
    tmp_path, monkeypatch):
  path = tmp_path / "samples.jsonl"
  log = _files.JsonlLog(path)
  log.append([{"sample": i} for i in range(3)])
  monkeypatch.setattr(_files, "open", lambda *a, **k: _FullAfter(
      open(*a, **k), 20), raising=False)      # pylint: disable=unspecified-encoding
  with pytest.raises(OSError, match="No space left"):
    log.append([{"sample": i} for i in range(3, 6)])
  monkeypatch.undo()
  assert not path.read_text().endswith("\n")            # A torn line.
  rerun = _files.JsonlLog(path)
  assert rerun.rows == [{"sample": i} for i in range(4)]  # Whole lines.
  rerun.append([{"sample": i} for i in range(6)
                if {"sample": i} not in rerun.rows])
  assert _files.JsonlLog(path).rows == [{"sample": i} for i in range(6)]


# Records 16 traces of 3000 tokens, two at a time, into <workdir>/traces
# (about 1.5 MB; what is committed already is skipped).
_RECORD = textwrap.dedent("""
    import dataclasses
    from absl import flags
    from kvp_jax import _cli_run
    from kvp_jax import traces
    from tests.traces.test_store_lock import LAYOUT, META
    from tests.test_disk_errors import long_trace
    flags.DEFINE_string("workdir", None, "Run directory.")

    def main(argv):
      layout = dataclasses.replace(LAYOUT, max_length=3000)
      with traces.TraceStore.create_or_resume(
          flags.FLAGS.workdir + "/traces", META, layout) as store:
        todo = [i for i in range(16) if f"s{i}" not in store.committed_ids()]
        for k in range(0, len(todo), 2):
          rows = todo[k:k + 2]
          store.append([long_trace(i) for i in rows],
                       [{"id": f"s{i}", "task": "t", "split": "train"}
                        for i in rows])

    _cli_run.run(main)
""")


def long_trace(i: int) -> traces_lib.Trace:
  """fake_trace's, 3000 tokens long (incompressible)."""
  rng = np.random.default_rng(i)
  t = 3000
  return traces_lib.Trace(
      tokens=rng.integers(0, 100, t).astype(np.int32), prompt_length=t - 2,
      split_points=np.array([t - 2], np.int32),
      importance=rng.random((2, 1, 1, t)).astype(np.float32),
      keys=rng.random((2, 1, t, 4)).astype(np.float32),
      values=rng.random((2, 1, t, 4)).astype(np.float32))


def test_a_real_full_then_read_only_disk(tmp_path):
  """On a 700 kB tmpfs (a private mount; needs root and unshare): the job
  stops with one line, what it committed reads back; on the disk made
  read-only one line again; with room, the rerun finishes the store."""
  disk, out = tmp_path / "disk", tmp_path / "out"
  disk.mkdir()
  out.mkdir()
  (out / "record.py").write_text(_RECORD)
  (out / "count.py").write_text(
      "import sys\nfrom kvp_jax import traces\n"
      "s = traces.TraceStore.open(sys.argv[1])\n"
      "print(s.num_records, s.num_consolidated)\n")
  python = sys.executable
  script = textwrap.dedent(f"""
      set -e
      mount -t tmpfs -o size=700k tmpfs {disk}
      run() {{ {python} {out}/record.py --workdir={disk} 2> {out}/err$1 \\
               || echo $? > {out}/rc$1; }}
      run 1
      {python} {out}/count.py {disk}/traces > {out}/n1
      mount -o remount,ro {disk}
      run 2
      mount -o remount,rw,size=20m {disk}
      run 3
      {python} {out}/count.py {disk}/traces > {out}/n3
  """)
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
             TMPDIR=str(tmp_path))
  try:
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT,
                          env=env, capture_output=True, text=True,
                          timeout=300, check=False)
  except FileNotFoundError:
    pytest.skip("no unshare")
  if not (out / "err1").exists():             # Never got to run.
    pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
  assert proc.returncode == 0, proc.stderr
  full = (out / "err1").read_text().splitlines()
  assert (out / "rc1").read_text().strip() == "2"
  assert len(full) == 1 and full[0].startswith(f"error: {disk}/traces/"), full
  assert "No space left on device (free some space and rerun" in full[0]
  assert 0 < int((out / "n1").read_text().split()[0]) < 16
  read_only = (out / "err2").read_text().splitlines()
  assert (out / "rc2").read_text().strip() == "2"
  assert len(read_only) == 1 and "Read-only file system" in read_only[0]
  assert not (out / "rc3").exists(), (out / "err3").read_text()
  assert (out / "n3").read_text().split() == ["16", "16"]
