"""benchmarks/accelerator_suite.py on fake benchmark scripts (the real smoke
size takes ~6 minutes on 2 cores; it is run by hand, see
benchmarks/README.md): results file, target checks, a failing and a
timed-out benchmark, the budget."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

FAKE = textwrap.dedent("""\
    import json, sys, time
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
    if args.get("mode") == "fail":
      sys.exit("broken on purpose")
    if args.get("mode") == "sleep":
      time.sleep(30)
    rows = [{"what": "decode", "batch": 32, "context": 32768,
             "cache": "budget 1024", "speedup": float(args["speedup"])}]
    for r in rows:
      print(json.dumps(r))
    if "out" in args:
      with open(args["out"], "w") as f:
        f.writelines(json.dumps(r) + "\\n" for r in rows)
    print("| a | table |")
    """)

DRIVER = textwrap.dedent("""\
    import importlib.util, json, sys
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "suite", "benchmarks/accelerator_suite.py")
    suite = importlib.util.module_from_spec(spec)
    sys.modules["suite"] = suite
    spec.loader.exec_module(suite)
    fake, out, budget = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    target = suite._TARGETS["decode"]
    suite.SIZES["accelerator"] = (
        suite.Job("fast", fake, ("--speedup=3.5",), 60, target),
        suite.Job("slow", fake, ("--speedup=1.5",), 60, target, takes_out=False),
        suite.Job("broken", fake, ("--mode=fail",), 60),
        suite.Job("hangs", fake, ("--mode=sleep", "--speedup=1"), 2),
        suite.Job("late", fake, ("--speedup=9",), 60, target),
    )
    rows = suite.run_suite("accelerator", out, budget_s=budget,
                           argv=["x.py", "--flag"])
    print("ROWS " + json.dumps(rows))
    """)


def _suite(tmp_path, budget):
  fake = tmp_path / "fake_bench.py"
  fake.write_text(FAKE)
  out = tmp_path / "out"
  proc = subprocess.run(
      [sys.executable, "-c", DRIVER, str(fake), str(out), str(budget)],
      cwd=REPO, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stdout + proc.stderr
  line = [l for l in proc.stdout.splitlines() if l.startswith("ROWS ")][-1]
  return json.loads(line[5:]), out


def test_suite_results_targets_and_failures(tmp_path):
  jobs, out = _suite(tmp_path, budget=60)
  status = {j["benchmark"]: j["status"] for j in jobs}
  assert status == {"fast": "ok", "slow": "ok", "broken": "failed (1)",
                    "hangs": "timeout", "late": "ok"}
  assert [j for j in jobs if j["benchmark"] == "hangs"][0]["seconds"] < 10
  rows = [json.loads(l) for l in (out / "suite.jsonl").read_text().splitlines()]
  measured = [r for r in rows if r["what"] == "decode"]
  # Read from --out for one script, from stdout for the other.
  assert [(r["benchmark"], r["speedup"]) for r in measured] == [
      ("fast", 3.5), ("slow", 1.5), ("late", 9.0)]
  assert len([r for r in rows if r["what"] == "job"]) == 5
  md = (out / "suite.md").read_text()
  assert "* device: cpu:" in md and "* command: `python x.py --flag`" in md
  assert "| fast | ok |" in md and "| 3.5 | yes |" in md
  assert "| 1.5 | no |" in md
  assert "| broken | failed (1) |" in md and "| hangs | timeout |" in md
  assert "| a | table |" in md
  assert "broken on purpose" in (out / "broken.txt").read_text()
  assert not list(out.glob("*.tmp"))


def test_suite_budget_skips_the_rest(tmp_path):
  jobs, _ = _suite(tmp_path, budget=1)
  assert {j["status"] for j in jobs} == {"skipped (budget spent)"}


def test_dry_run_lists_both_sizes():
  for size, first in (("accelerator", "--decode_contexts=32768"),
                      ("smoke", "--model=tiny")):
    proc = subprocess.run(
        [sys.executable, "benchmarks/accelerator_suite.py", f"--size={size}",
         "--dry_run"], cwd=REPO, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 7 and first in lines[0]
    scripts = {l.split()[1] for l in lines}
    assert scripts == {f"benchmarks/{s}.py" for s in (
        "eviction_speed", "train_speed", "trace_speed", "model_speed",
        "cost_at_length")}


def test_real_smoke_run_of_two_benchmarks(tmp_path):
  """The suite at its smoke size on two of the real scripts (the model and
  trace benchmarks; the whole smoke run is recorded by hand): both run and
  the results file says so."""
  out = tmp_path / "smoke"
  proc = subprocess.run(
      [sys.executable, "benchmarks/accelerator_suite.py", "--size=smoke",
       "--only=model,traces", f"--out_dir={out}"], cwd=REPO,
      env=dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu"),
      capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  rows = [json.loads(line) for line in
          (out / "suite.jsonl").read_text().splitlines()]
  jobs = {r["benchmark"]: r for r in rows if r.get("what") == "job"}
  assert set(jobs) == {"model", "traces"}, jobs
  assert all(j["returncode"] == 0 and j["measurements"] > 0
             for j in jobs.values()), jobs
  assert sum(r.get("what") != "job" for r in rows) >= 2   # Measurements.
