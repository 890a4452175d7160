"""benchmarks/cost_at_length.py without running a model: the points of a
(context, batch), the target checks, and resuming from --out."""

import importlib.util
import json
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _module():
  sys.path.insert(0, str(REPO / "benchmarks"))
  try:
    spec = importlib.util.spec_from_file_location(
        "cost_at_length", REPO / "benchmarks" / "cost_at_length.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  finally:
    sys.path.remove(str(REPO / "benchmarks"))
  return module


COST = _module()


DEFAULTS = {"lengths": ["128"], "batches": ["1"], "budgets": ["32"],
            "chunk_size": 64, "scorer": "kvp", "decode_steps": 2,
            "repeats": 1, "model": "tiny", "dtype": "float32", "out": None,
            "plot": None}


def _flags(monkeypatch, **values):
  """The script's flags as run with these values (no absl registry)."""
  monkeypatch.setattr(COST, "FLAGS", {
      k: types.SimpleNamespace(value=v)
      for k, v in {**DEFAULTS, **values}.items()})


def test_points_skip_budgets_the_context_does_not_exceed(monkeypatch):
  _flags(monkeypatch, budgets=["256", "1024"])
  points = COST.points(512, 8)
  assert points[0][:2] == ["--parts=score", "--scorers="]
  assert [p for p in points if "--parts=memory" in p] == [
      ["--parts=memory", "--memory_context=512", "--memory_batch=8",
       "--memory_budget=256", "--memory_scorer=kvp"]]
  assert points[-1][-1] == "--budgets=256"


def test_targets_hold_or_miss():
  chunk = lambda n, peak: dict(what="chunked_prefill", batch=1, budget=1024,
                               context=n, peak_slots_per_head=peak)
  step = lambda n, cache, ms: dict(what="decode", batch=1, context=n,
                                   cache=cache, ms_per_step=ms)
  lines = COST.check_targets([
      chunk(2048, 1536), chunk(32768, 1536),
      step(1024, "full", 10.0), step(32768, "budget 1024", 11.0)])
  assert "flat (holds)" in lines[0]
  assert "1.10x" in lines[1] and "holds" in lines[1]
  lines = COST.check_targets([
      chunk(2048, 1536), chunk(32768, 1600),
      step(1024, "full", 10.0), step(32768, "budget 1024", 13.0)])
  assert "GROWS (misses)" in lines[0] and "misses" in lines[1]


def test_a_rerun_skips_the_points_out_holds(tmp_path, monkeypatch):
  out = tmp_path / "rows.jsonl"
  _flags(monkeypatch, out=str(out))
  ran = []

  def fake(args):
    ran.append(args)
    return [{"what": "x", "command": COST.shown_command(args),
             "peak_rss_mib": 1.0}]
  monkeypatch.setattr(COST, "run_point", fake)
  monkeypatch.setattr(COST, "_device_line", lambda: "cpu")
  COST.main([])
  first = len(ran)
  assert first == 3 and len(out.read_text().splitlines()) == 3
  COST.main([])
  assert len(ran) == first                 # Every point was in --out.
  assert [json.loads(l)["date"] for l in out.read_text().splitlines()]


def test_a_failing_point_does_not_stop_the_others(tmp_path, monkeypatch):
  out = tmp_path / "rows.jsonl"
  _flags(monkeypatch, out=str(out))
  monkeypatch.setattr(COST, "_device_line", lambda: "cpu")

  def fake(args):
    if "--parts=memory" in args:
      raise RuntimeError("out of memory")
    return [{"what": "x", "command": COST.shown_command(args)}]
  monkeypatch.setattr(COST, "run_point", fake)
  try:
    COST.main([])
  except SystemExit as e:
    assert "1 point(s) failed" in str(e)
  else:
    raise AssertionError("a failed point must fail the run")
  assert len(out.read_text().splitlines()) == 2     # Score and decode.
