"""Atomic writes and the resumable JSONL log."""

import json
import os
import stat

import pytest

from kvp_jax import _files


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
  target = tmp_path / "out.json"
  target.write_text("old")
  _files.atomic_write_json(target, {"a": 1})
  assert json.loads(target.read_text()) == {"a": 1}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_write_gives_the_umask_mode_not_0600(tmp_path):
  target = tmp_path / "f.txt"
  old = os.umask(0o022)
  try:
    _files.atomic_write(target, "x")
  finally:
    os.umask(old)
  assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_failed_write_keeps_the_old_file(tmp_path):
  target = tmp_path / "f.txt"
  target.write_text("old")
  with pytest.raises(RuntimeError):
    with _files.atomic_output(target) as tmp:
      tmp.write_text("half")
      raise RuntimeError("killed")
  assert target.read_text() == "old"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_two_writers_use_distinct_temporaries(tmp_path):
  target = tmp_path / "f.txt"
  with _files.atomic_output(target) as a, _files.atomic_output(target) as b:
    assert a != b
    a.write_text("a")
    b.write_text("b")
  assert target.read_text() in ("a", "b")


def test_jsonl_log_drops_a_torn_line_and_resumes(tmp_path):
  path = tmp_path / "log.jsonl"
  log = _files.JsonlLog(path)
  log.append([{"i": 0}, {"i": 1}])
  with open(path, "a", encoding="utf-8") as f:
    f.write('{"i": 2')                      # A writer killed mid-line.
  log = _files.JsonlLog(path)
  assert log.rows == [{"i": 0}, {"i": 1}]
  log.append([{"i": 2}])
  assert [json.loads(l) for l in path.read_text().splitlines()] == [
      {"i": 0}, {"i": 1}, {"i": 2}]
