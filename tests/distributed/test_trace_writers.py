"""Several writers of one trace store, simulated in one process: each
writer role records its planned batches (committing as the sole writer
does); whatever order they run in and whichever one is missing (killed)
until a rerun, the merged store equals one writer's, file for file."""

from pathlib import Path

import pytest

from kvp_jax import _locks
from kvp_jax import traces as traces_lib
from tests.traces.test_trace_job import _assert_same
from tests.traces.test_trace_job import _cfg
from tests.traces.test_trace_job import _contents
from tests.traces.test_trace_job import _samples
from tests.traces.test_trace_job import tiny_gemma_vocab  # pylint: disable=unused-import


def _files(path: Path) -> dict[str, bytes]:
  """Every file of a store but metadata.json (it has a creation time)."""
  return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*")
          if p.is_file() and p.name != "metadata.json"}


def _run(model, path, role, **kw):
  store = traces_lib.generate_traces(model, _cfg(), path, samples=_samples(),
                                    progress=False, role=role, **kw)
  store.close()
  return store


@pytest.fixture(scope="module")
def one_writer(tiny_gemma_vocab, tmp_path_factory):
  path = tmp_path_factory.mktemp("one") / "s"
  store = _run(tiny_gemma_vocab, path, _locks.SOLE_WRITER)
  return path, _contents(traces_lib.TraceStore.open(path)), store.num_records


def test_writer_killed_then_rerun_with_one(tiny_gemma_vocab, one_writer,
                                           tmp_path):
  ref_path, ref, n = one_writer
  path = tmp_path / "s"
  # Writer 1 of 2 finishes its batches (1 and 3); writer 0 was killed
  # before recording any: the store has holes and nothing is merged.
  _run(tiny_gemma_vocab, path, _locks.Role(1, 2))
  partial = traces_lib.TraceStore.open(path)
  assert 0 < partial.num_records < n
  assert partial.num_consolidated == 0 and partial.has_pending
  assert (path / "commits").is_dir()
  first = partial.records[0]
  assert first.index > 0                           # Row 0 is writer 0's.
  assert partial.read(first.index)["tokens"].shape == (first.length,)
  with pytest.raises(IndexError):
    partial.read(0)
  # Rerun as one process: it records the missing rows and merges.
  _run(tiny_gemma_vocab, path, _locks.SOLE_WRITER)
  assert not (path / "commits").exists()
  _assert_same(ref, _contents(traces_lib.TraceStore.open(path)))
  assert _files(path) == _files(ref_path)


def test_writers_in_turn_and_a_finished_job(tiny_gemma_vocab, one_writer,
                                            tmp_path):
  ref_path, _, _ = one_writer
  path = tmp_path / "s"
  _run(tiny_gemma_vocab, path, _locks.Role(0, 2), max_batches=3)
  _run(tiny_gemma_vocab, path, _locks.Role(1, 2))   # Holes: not merged.
  assert traces_lib.TraceStore.open(path).has_pending
  _run(tiny_gemma_vocab, path, _locks.Role(0, 2))   # Fills them, merges.
  assert _files(path) == _files(ref_path)
  stamps = {p: p.stat().st_mtime_ns for p in path.rglob("*")}
  for role in (_locks.Role(0, 2), _locks.Role(1, 2), _locks.SOLE_WRITER):
    _run(tiny_gemma_vocab, path, role)              # Nothing left to do.
  assert stamps == {p: p.stat().st_mtime_ns for p in path.rglob("*")}


def test_killed_merge_and_bad_commits(tiny_gemma_vocab, one_writer, tmp_path):
  ref_path, _, _ = one_writer
  path = tmp_path / "s"
  _run(tiny_gemma_vocab, path, _locks.Role(1, 2))
  commits = sorted((path / "commits").iterdir())
  saved = {c.name: c.read_bytes() for c in commits}
  _run(tiny_gemma_vocab, path, _locks.Role(0, 2))
  # A merge killed after it replaced records.jsonl, before it deleted the
  # commit files: they repeat records.jsonl, are ignored, then deleted.
  (path / "commits").mkdir()
  for name, data in saved.items():
    (path / "commits" / name).write_bytes(data)
  assert traces_lib.TraceStore.open(path).num_records == len(
      traces_lib.TraceStore.open(ref_path).records)
  _run(tiny_gemma_vocab, path, _locks.Role(0, 2))
  assert _files(path) == _files(ref_path)
  # A commit file that overlaps another row is corruption, reported.
  (path / "commits").mkdir()
  name = next(iter(saved))
  (path / "commits" / name).write_bytes(
      saved[name].replace(b'"id": "s', b'"id": "x'))
  with pytest.raises(traces_lib.StoreError, match="corrupt"):
    traces_lib.TraceStore.open(path)
