"""The per-sample log: resuming, compaction into samples.jsonl.gz, and a
kill between the compressed write and the plain file's removal."""

import gzip
import json

from kvp_jax import evaluation


def _row(sample, value):
  return dict(suite="s", sample=sample, group="g", scorer="knorm", budget=64,
              settings="x", protocol="once", allocation="uniform",
              metric="accuracy", value=value)


def test_compaction_keeps_every_row_once_and_is_deterministic(tmp_path):
  path = tmp_path / "samples.jsonl"
  log = evaluation.SampleLog(path)
  log.add([_row("a", 1.0), _row("b", 2.0)])
  log.add([_row("a", 9.0)])                    # A logged key: not added.
  log.compact()
  assert not path.exists()
  packed = path.with_name("samples.jsonl.gz")
  first = packed.read_bytes()
  with gzip.open(packed, "rt") as f:
    assert [json.loads(l)["value"] for l in f] == [1.0, 2.0]
  # Reopened: the compressed rows, then new ones appended to the plain file.
  log = evaluation.SampleLog(path)
  assert log.has(**_row("b", 0)) and not log.has(**_row("c", 0))
  log.add([_row("c", 3.0)])
  assert [r["sample"] for r in evaluation.SampleLog(path).rows] == [
      "a", "b", "c"]
  # A kill after the compressed write, before the plain file's removal:
  # both hold "c"; reading keeps one.
  log = evaluation.SampleLog(path)
  log.compact()
  path.write_text(json.dumps(_row("c", 3.0)) + "\n")
  assert [r["sample"] for r in evaluation.SampleLog(path).rows] == [
      "a", "b", "c"]
  # The same rows give the same bytes (gzip's timestamp is fixed).
  fresh = tmp_path / "again" / "samples.jsonl"
  again = evaluation.SampleLog(fresh)
  again.add([_row("a", 1.0), _row("b", 2.0)])
  again.compact()
  assert fresh.with_name("samples.jsonl.gz").read_bytes() == first
