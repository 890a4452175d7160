r"""Every accelerator benchmark in one run, one results file, target checks.

  python benchmarks/accelerator_suite.py                # the targets' sizes
  python benchmarks/accelerator_suite.py --size=smoke   # tiny; CPU, minutes
  python benchmarks/accelerator_suite.py --only=train,decode --dry_run

Runs the benchmark scripts of this directory as subprocesses with their own
flags (their flag definitions are the interface), one after another, each in
a fresh process (a clean device and peak RSS):

  decode    eviction_speed.py --parts=decode: decode step vs budget
  train     train_speed.py: train step, in-memory vs the grain pipeline
  traces    trace_speed.py: trace tokens/s with the store write
  memory    eviction_speed.py --parts=memory: chunked-prefill peak memory
  score     eviction_speed.py --parts=score: scoring cost vs a prefill
  model     model_speed.py: prefill tokens/s and decode step time
  length    cost_at_length.py: prefill time, peak cache and process memory,
            decode step, full cache vs a budget, from 4k to 32k context

--size=accelerator uses the sizes of the targets of benchmarks/README.md
(2k-token traces at batch 32; 18 agents on 128 traces of 2k tokens; batch 32
at 32k context with budgets 256/1k/4k; prefill at batch 8 x 4k, decode at
batch 32 x 4k), trimmed in repeats and steps so that the whole suite fits in
--budget_s (default 480 s: 8 minutes of one GPU). Each benchmark has its own
time limit, cut to what is left of the budget; one that fails or runs out of
time is recorded as such and the suite goes on. --size=smoke runs the same
benchmarks on tiny models (a few minutes on a 2-core CPU).

Written to --out_dir (default benchmarks/results/<platform>-<size>):

  suite.jsonl  every measurement as its script emitted it, plus "benchmark"
               (the name above), and one {"what": "job", ...} row per
               benchmark (command, exit status, seconds);
  suite.md     device, date, host and the suite's command line; per
               benchmark its command, time, status, the table it printed,
               and whether each target was met (accelerator size only);
  NAME.txt     each benchmark's full stdout and stderr.

The suite process does not import JAX (it would claim the GPU's memory); the
device line comes from a short subprocess.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from absl import app
from absl import flags

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

_SIZE = flags.DEFINE_enum("size", "accelerator", ["accelerator", "smoke"],
                          "The targets' sizes, or tiny models.")
_ONLY = flags.DEFINE_list("only", None, "Run only these benchmarks.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Results directory.")
_BUDGET = flags.DEFINE_float("budget_s", None,
                             "Seconds for the whole suite (default: 480 for "
                             "accelerator, 600 for smoke).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands only.")


@dataclasses.dataclass(frozen=True)
class Target:
  """A target of benchmarks/README.md and how to read it off the rows.

  `value(rows)` returns the measured number (None: not measured), met if
  `value <op> threshold` with op ">=" or "<=".
  """
  text: str
  value: Callable[[list[dict]], float | None]
  op: str
  threshold: float

  def check(self, rows: list[dict]) -> tuple[float | None, bool | None]:
    v = self.value(rows)
    if v is None:
      return None, None
    return v, v >= self.threshold if self.op == ">=" else v <= self.threshold


@dataclasses.dataclass(frozen=True)
class Job:
  name: str
  script: str
  flags: tuple[str, ...]
  timeout_s: float
  targets: tuple[Target, ...] = ()
  takes_out: bool = True          # The script has --out (else: parse stdout).


def _pick(rows, field, **where):
  for r in rows:
    if all(r.get(k) == v for k, v in where.items()):
      return r.get(field)
  return None


_TARGETS = {
    "decode": (Target(
        "batch 32, 32k context, budget 1k: decode step >= 3x faster than the "
        "full cache", lambda rows: _pick(rows, "speedup", what="decode",
                                         batch=32, context=32768,
                                         cache="budget 1024"), ">=", 3.0),),
    "train": (
        Target("18 agents, 128 traces of 2k tokens: <= 0.5 s a step (stored "
               "features, in-memory batch)",
               lambda rows: _pick(rows, "step_seconds", what="train_step",
                                  features="stored", input="memory"),
               "<=", 0.5),
        Target("real pipeline at most 10% slower than in-memory (stored)",
               lambda rows: _pick(rows, "pipeline_slowdown_pct",
                                  what="train_step", features="stored",
                                  input="pipeline"), "<=", 10.0)),
    "traces": (Target(
        ">= 50k trace tokens/s for 2k-token samples, store write included "
        "(keys and values stored)",
        lambda rows: _pick(rows, "tokens_per_s", what="traces",
                           store="stored"), ">=", 50_000),),
    "model": (
        Target("prefill >= 200k tokens/s at batch 8, 4k context",
               lambda rows: _pick(rows, "tokens_per_s", what="prefill",
                                  batch=8, context=4096), ">=", 200_000),
        Target("decode step <= 2 ms at batch 32, 4k context",
               lambda rows: _pick(rows, "ms_per_step", what="decode",
                                  batch=32, context=4096), "<=", 2.0)),
}

_TINY = ("--model=tiny", "--dtype=float32")
_TINY_AGENTS = ("--hidden=32", "--feature_width=32")

SIZES = {
    # Order: the targets first, then what has none; limits sum to 480 s.
    "accelerator": (
        Job("decode", "eviction_speed.py", (
            "--parts=decode", "--decode_contexts=32768",
            "--decode_batches=1,32", "--budgets=256,1024,4096",
            "--decode_steps=32", "--repeats=3"), 90, _TARGETS["decode"]),
        Job("train", "train_speed.py", ("--steps=5", "--warmup=2"), 140,
            _TARGETS["train"]),
        Job("traces", "trace_speed.py", ("--batch_size=32", "--num_batches=4"),
            90, _TARGETS["traces"]),
        Job("memory", "eviction_speed.py", ("--parts=memory", "--repeats=1"),
            40),
        Job("score", "eviction_speed.py", ("--parts=score", "--repeats=3"), 30),
        Job("model", "model_speed.py", (
            "--contexts=4096", "--prefill_batches=1,8",
            "--decode_batches=1,32", "--repeats=3"), 50, _TARGETS["model"],
            takes_out=False),
        # Last: what is left of the budget; a point at a time, so a cut run
        # keeps the points it finished.
        Job("length", "cost_at_length.py", (
            "--lengths=4096,32768", "--batches=8", "--budgets=1024",
            "--dtype=bfloat16", "--decode_steps=32", "--repeats=3"), 40),
    ),
    "smoke": (
        Job("decode", "eviction_speed.py", _TINY + _TINY_AGENTS + (
            "--parts=decode", "--decode_contexts=256", "--decode_batches=2",
            "--budgets=32,64", "--decode_steps=4", "--repeats=2"), 120),
        Job("train", "train_speed.py", (
            "--model=tiny", "--dtype=float32", "--batch_size=4", "--length=64",
            "--steps=3", "--warmup=1") + _TINY_AGENTS, 180),
        Job("traces", "trace_speed.py", (
            "--model=tiny_gemma_vocab", "--prompt_length=120",
            "--max_new_tokens=8", "--pad_multiple=128", "--batch_size=2",
            "--num_batches=2"), 120),
        Job("memory", "eviction_speed.py", _TINY + _TINY_AGENTS + (
            "--parts=memory", "--memory_context=256", "--memory_budget=32",
            "--chunk_size=64", "--repeats=1"), 120),
        Job("score", "eviction_speed.py", _TINY + _TINY_AGENTS + (
            "--parts=score", "--score_context=128", "--score_batch=2",
            "--score_budget=32", "--scorers=kvp,knorm,h2o", "--repeats=2"),
            120),
        Job("model", "model_speed.py", _TINY + (
            "--contexts=128", "--prefill_batches=1", "--decode_batches=1",
            "--decode_steps=4", "--repeats=2"), 120, takes_out=False),
        Job("length", "cost_at_length.py", (
            "--model=tiny", "--lengths=128,256", "--batches=1",
            "--budgets=32", "--chunk_size=64", "--decode_steps=2",
            "--repeats=1"), 240),
    ),
}
_DEFAULT_BUDGET = {"accelerator": 480.0, "smoke": 600.0}


def _env() -> dict:
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env["PYTHONPATH"] = os.pathsep.join(
      [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
  return env


def _run(cmd: list[str], timeout_s: float) -> tuple[int, str, str, float]:
  """(status, stdout, stderr, seconds); status 124 after timeout_s (the
  whole process group is killed: grain workers too)."""
  start = time.perf_counter()
  proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, errors="replace",
                          start_new_session=True)
  try:
    out, err = proc.communicate(timeout=max(timeout_s, 1))
    status = proc.returncode
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
    status = 124
  return status, out, err, time.perf_counter() - start


def device_line() -> str:
  """`platform:device_kind x count, jax <version>` from a subprocess."""
  code = ("import jax; d = jax.devices(); print(f'{d[0].platform}:"
          "{d[0].device_kind} x {len(d)}, jax {jax.__version__}')")
  status, out, err, _ = _run([sys.executable, "-c", code], 120)
  return out.strip() if status == 0 else f"unknown ({err.strip()[-200:]})"


def _json_rows(text: str) -> list[dict]:
  rows = []
  for line in text.splitlines():
    if line.startswith("{"):
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        pass
  return rows


def _command(job: Job, out_path: Path | None) -> list[str]:
  cmd = [sys.executable, str(HERE / job.script), *job.flags]
  if job.takes_out and out_path is not None:
    cmd.append(f"--out={out_path}")
  return cmd


def _shown(cmd: list[str]) -> str:
  """The command as typed from the repository root."""
  shown = ["python", os.path.relpath(cmd[1], REPO)] + cmd[2:]
  return " ".join(shlex.quote(c) for c in shown if not c.startswith("--out="))


def run_suite(size: str, out_dir: Path, only=None, budget_s=None,
              argv=None) -> list[dict]:
  """Runs the benchmarks of `size`; writes suite.jsonl, suite.md and
  NAME.txt to out_dir; returns the job rows.

  Raises:
    ValueError: an unknown name in `only`.
  """
  jobs = SIZES[size]
  names = [j.name for j in jobs]
  if only:
    unknown = sorted(set(only) - set(names))
    if unknown:
      raise ValueError(f"unknown benchmarks {unknown}; known: {names}")
    jobs = [j for j in jobs if j.name in only]
  budget_s = budget_s or _DEFAULT_BUDGET[size]
  out_dir.mkdir(parents=True, exist_ok=True)
  start = time.monotonic()
  date = datetime.datetime.now(datetime.timezone.utc).strftime(
      "%Y-%m-%d %H:%M UTC")
  device = device_line()
  argv = list(argv or sys.argv)
  if argv and argv[0].endswith(".py"):
    argv = ["python", os.path.relpath(os.path.abspath(argv[0]), REPO)] + argv[1:]
  command = " ".join(shlex.quote(a) for a in argv)
  md = [f"# Accelerator suite ({size})", "",
        f"* device: {device}",
        f"* date: {date}",
        f"* host: {platform.node()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        f"* command: `{command}`",
        f"* budget: {budget_s:.0f} s", ""]
  summary = ["| benchmark | status | seconds | target | measured | met |",
             "|---|---|---|---|---|---|"]
  sections, job_rows = [], []
  with open(out_dir / "suite.jsonl", "w", encoding="utf-8") as out:
    for job in jobs:
      left = budget_s - (time.monotonic() - start)
      tmp = out_dir / f"{job.name}.jsonl.tmp"
      cmd = _command(job, tmp)
      if left < 5:
        status, stdout, stderr, sec = None, "", "", 0.0
      else:
        print(f"[suite] {job.name}: {_shown(cmd)}", flush=True)
        status, stdout, stderr, sec = _run(cmd, min(job.timeout_s, left))
      rows = (_json_rows(tmp.read_text()) if job.takes_out and tmp.exists()
              else _json_rows(stdout))
      tmp.unlink(missing_ok=True)
      (out_dir / f"{job.name}.txt").write_text(
          f"$ {_shown(cmd)}\n{stdout}\n--- stderr\n{stderr}")
      for r in rows:
        out.write(json.dumps({"benchmark": job.name, **r}) + "\n")
      state = ("skipped (budget spent)" if status is None else
               "ok" if status == 0 else
               "timeout" if status == 124 else f"failed ({status})")
      job_row = {"what": "job", "benchmark": job.name, "command": _shown(cmd),
                 "status": state, "returncode": status, "seconds": sec,
                 "measurements": len(rows)}
      out.write(json.dumps(job_row) + "\n")
      out.flush()
      job_rows.append(job_row)
      print(f"[suite] {job.name}: {state}, {sec:.1f} s, {len(rows)} rows",
            flush=True)
      checks = [(t, *t.check(rows)) for t in job.targets] if size != "smoke" \
          else []
      if not checks:
        summary.append(f"| {job.name} | {state} | {sec:.0f} | | | |")
      for t, value, met in checks:
        summary.append(
            f"| {job.name} | {state} | {sec:.0f} | {t.text} | "
            f"{'n/a' if value is None else f'{value:,.3g}'} | "
            f"{'n/a' if met is None else 'yes' if met else 'no'} |")
      table = stdout[stdout.rfind("\n{") + 1:] if "\n{" in stdout else stdout
      table = "\n".join(l for l in table.splitlines()
                        if not l.startswith("{")).strip()
      sections += [f"## {job.name}", "", f"`{_shown(cmd)}`", "",
                   f"{state}, {sec:.1f} s, {len(rows)} measurements", "",
                   table or "(no table printed; see "
                   f"{job.name}.txt)", ""]
  total = time.monotonic() - start
  md += [f"Total: {total:.0f} s.", ""] + summary + [""] + sections
  (out_dir / "suite.md").write_text("\n".join(md) + "\n")
  print(f"[suite] {total:.0f} s; wrote {out_dir}/suite.jsonl and suite.md",
        flush=True)
  return job_rows


def main(argv):
  del argv
  size = _SIZE.value
  if _DRY_RUN.value:
    for job in SIZES[size]:
      if not _ONLY.value or job.name in _ONLY.value:
        print(_shown(_command(job, None)))
    return
  out_dir = Path(_OUT_DIR.value) if _OUT_DIR.value else (
      HERE / "results" / f"{device_line().split(':')[0]}-{size}")
  rows = run_suite(size, out_dir, _ONLY.value, _BUDGET.value)
  if any(r["status"] != "ok" for r in rows):
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
