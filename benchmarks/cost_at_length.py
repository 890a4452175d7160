r"""Cost at length: what a compressed cache costs and saves from 2k to 32k
tokens, for the full cache and each budget, at batch 1 and 8.

  python benchmarks/cost_at_length.py \
      --out=benchmarks/results/cpu/cost_at_length.jsonl \
      --plot=benchmarks/results/cpu/cost_at_length.png

Every point runs benchmarks/eviction_speed.py in a process of its own (its
peak resident memory, read by /usr/bin/time, is that point's alone), on
Gemma 3 270M's shape with random weights (--dtype, float32 by default: the
CPU's fast type):

  full cache   --parts=score with no scorer: the plain prefill of the whole
               context ("prefill" row) and the full cache's MiB;
  budget b     --parts=memory: chunked prefill evicting to b after every
               --chunk_size tokens, scored by --scorer ("chunked_prefill"
               row: the time of a second run, after compilation; the cache's
               MiB at its peak, budget + chunk slots per head);
  decode       --parts=decode at the context and batch: ms per greedy step
               of the full cache and of each budget ("decode" rows).

Each row gains peak_rss_mib (the point's process) and the command. The
script prints the rows, the targets, and plots step time and peak memory
against context length, one line per cache. Targets (issue "Long
context", on this CPU): the peak cache bytes under chunked prefill do not
grow with the context; a decode step at b = 1024 and 32k context takes at
most 1.2x a step at 1k context (give 1024 in --lengths for the reference).
"""

import datetime
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from absl import app
from absl import flags

# The command line (defined when run as a script, so that importing the
# module, as its tests do, defines no absl flag).
FLAGS = {}


def _define_flags() -> dict:
  return {
      "lengths": flags.DEFINE_list(
          "lengths", ["1024", "2048", "4096", "8192", "16384", "32768"],
          "Context lengths (tokens)."),
      "batches": flags.DEFINE_list("batches", ["1", "8"], "Batch sizes."),
      "budgets": flags.DEFINE_list(
          "budgets", ["256", "512", "1024", "2048"],
          "Budgets (tokens per layer and KV head)."),
      "chunk_size": flags.DEFINE_integer("chunk_size", 512,
                                         "Chunked prefill's chunk."),
      "scorer": flags.DEFINE_string("scorer", "kvp",
                                    "Scorer of the chunked prefill."),
      "decode_steps": flags.DEFINE_integer("decode_steps", 16,
                                           "Steps per decode run."),
      "repeats": flags.DEFINE_integer("repeats", 2,
                                      "Timed decode runs per point."),
      "model": flags.DEFINE_string("model", "gemma3_270m",
                                   "Model config preset."),
      "dtype": flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                                 "Param, compute and cache dtype."),
      "out": flags.DEFINE_string("out", None,
                                 "Also write the JSON lines here."),
      "plot": flags.DEFINE_string("plot", None, "Write the plot here (PNG)."),
  }


def _value(name: str):
  return FLAGS[name].value


SCRIPT = Path(__file__).resolve().parent / "eviction_speed.py"
STEP_TARGET = 1.2          # Step at b = 1024, 32k context / step at 1k.


def _max_rss_mib(report: str) -> float:
  match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report)
  if match is None:
    raise RuntimeError("/usr/bin/time printed no maximum resident set size")
  return int(match.group(1)) / 1024


def run_point(args: list[str]) -> list[dict]:
  """eviction_speed.py with `args` in its own process: its JSON rows, each
  with the process's peak RSS and the command.

  Raises:
    RuntimeError: the benchmark failed (its last stderr lines).
  """
  common = _common_args()
  with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "rows.jsonl"
    command = [sys.executable, str(SCRIPT), *common, *args, f"--out={out}"]
    done = subprocess.run(["/usr/bin/time", "-v", *command],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
      raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n"
                         f"{done.stderr[-2000:]}")
    rows = [json.loads(l) for l in out.read_text().splitlines() if l]
  rss = _max_rss_mib(done.stderr)
  return [dict(r, peak_rss_mib=rss, command=shown_command(args))
          for r in rows]


def _common_args() -> list[str]:
  return [f"--{name}={_value(name)}" for name in (
      "model", "dtype", "chunk_size", "decode_steps", "repeats")]


def shown_command(args: list[str]) -> str:
  """A point's command as its rows record it."""
  return ("python benchmarks/eviction_speed.py " +
          " ".join(_common_args() + args))


def points(length: int, batch: int) -> list[list[str]]:
  """The eviction_speed.py arguments of one (context, batch)."""
  budgets = [b for b in map(int, _value("budgets")) if b < length]
  out = [["--parts=score", "--scorers=", f"--score_context={length}",
          f"--score_batch={batch}"]]
  out += [["--parts=memory", f"--memory_context={length}",
           f"--memory_batch={batch}", f"--memory_budget={b}",
           f"--memory_scorer={_value('scorer')}"] for b in budgets]
  out.append(["--parts=decode", f"--decode_contexts={length}",
              f"--decode_batches={batch}",
              "--budgets=" + ",".join(map(str, budgets or [length]))])
  return out


def check_targets(rows: list[dict]) -> list[str]:
  """One line per target: what was measured and whether it holds."""
  lines = []
  chunked = [r for r in rows if r["what"] == "chunked_prefill"]
  for batch in sorted({r["batch"] for r in chunked}):
    for budget in sorted({r["budget"] for r in chunked}):
      # The slots the cache held at its peak, as the prefill counted them.
      peaks = {r["context"]: r["peak_slots_per_head"] for r in chunked
               if r["batch"] == batch and r["budget"] == budget}
      if len(peaks) > 1:
        flat = max(peaks.values()) <= min(peaks.values())
        lines.append(f"peak cache, batch {batch}, b={budget}: "
                     f"{min(peaks.values())}..{max(peaks.values())} slots "
                     f"per head over {min(peaks)}..{max(peaks)} tokens: "
                     f"{'flat (holds)' if flat else 'GROWS (misses)'}")
  decode = [r for r in rows if r["what"] == "decode"]
  for batch in sorted({r["batch"] for r in decode}):
    at = {(r["context"], r["cache"]): r["ms_per_step"] for r in decode
          if r["batch"] == batch}
    long, short = at.get((32768, "budget 1024")), at.get((1024, "full"))
    if long is not None and short is not None:
      ratio = long / short
      lines.append(
          f"decode step, batch {batch}: b=1024 at 32k {long:.1f} ms vs the "
          f"full cache at 1k {short:.1f} ms = {ratio:.2f}x (target <= "
          f"{STEP_TARGET}x: {'holds' if ratio <= STEP_TARGET else 'misses'})")
  return lines


def plot(rows: list[dict], path: str) -> None:
  """Per batch: decode ms per step, peak process memory and peak KV cache
  against context length, one line per cache (full, each budget)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  batches = sorted({r["batch"] for r in rows})
  fig, axes = plt.subplots(len(batches), 3, figsize=(16, 4 * len(batches)),
                           squeeze=False)
  for row_axes, batch in zip(axes, batches):
    mine = [r for r in rows if r["batch"] == batch]
    caches = {}
    for r in mine:
      if r["what"] == "decode":
        caches.setdefault(r["cache"], {}).setdefault(
            "step", []).append((r["context"], r["ms_per_step"]))
      elif r["what"] == "chunked_prefill":
        mine_ = caches.setdefault(f"budget {r['budget']}", {})
        mine_.setdefault("rss", []).append((r["context"], r["peak_rss_mib"]))
        mine_.setdefault("cache", []).append(
            (r["context"], r["peak_cache_mib"]))
        full = caches.setdefault("full", {}).setdefault("cache", [])
        if (r["context"], r["full_cache_mib"]) not in full:
          full.append((r["context"], r["full_cache_mib"]))
      elif r["what"] == "prefill":
        caches.setdefault("full", {}).setdefault("rss", []).append(
            (r["context"], r["peak_rss_mib"]))
    for name in sorted(caches, key=lambda c: (c != "full", len(c), c)):
      for ax, key in zip(row_axes, ("step", "rss", "cache")):
        points_ = sorted(caches[name].get(key, []))
        if points_:
          ax.plot(*zip(*points_), marker="o", label=name,
                  linestyle="--" if name == "full" else "-")
    for ax, label in zip(row_axes, ("decode ms per step",
                                    "peak process memory (MiB)",
                                    "peak KV cache (MiB)")):
      ax.set_xscale("log", base=2)
      ax.set_xlabel("context (tokens)")
      ax.set_ylabel(label)
      ax.set_title(f"batch {batch}")
      ax.grid(alpha=0.3)
      ax.legend(fontsize=8)
  fig.suptitle("Cost at length (full cache; chunked prefill with eviction)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  from kvp_jax import _files  # pylint: disable=import-outside-toplevel
  # A rerun with the same --out skips the points it holds (a killed run
  # resumes; each point's rows are appended whole, once it has finished).
  log = _files.JsonlLog(_value("out")) if _value("out") else None
  done = {r["command"] for r in log.rows} if log else set()
  date = datetime.date.today().isoformat()
  device = _device_line()
  wanted = [args for length in map(int, _value("lengths"))
            for batch in map(int, _value("batches"))
            for args in points(length, batch)]
  failed, fresh = [], []
  for args in wanted:
    if shown_command(args) in done:
      continue
    try:
      new = [dict(r, device=device, date=date) for r in run_point(args)]
    except RuntimeError as e:         # Out of memory, say: go on.
      print(f"error: {e}", file=sys.stderr, flush=True)
      failed.append(shown_command(args))
      continue
    for row in new:
      print(json.dumps(row), flush=True)
    if log:
      log.append(new)
    fresh += new
  # This run's points only (--out may hold other sizes' too).
  commands = {shown_command(args) for args in wanted}
  rows = [r for r in (log.rows if log else fresh)
          if r["command"] in commands]
  for line in check_targets(rows):
    print(line)
  if _value("plot"):
    plot(rows, _value("plot"))
    print(f"plot: {_value('plot')}")
  if failed:
    sys.exit(f"error: {len(failed)} point(s) failed (a rerun retries them): "
             + "; ".join(failed))


def _device_line() -> str:
  """The device, read in a subprocess: JAX in this process would hold an
  accelerator's memory while the points run."""
  code = ("import sys; sys.path.insert(0, sys.argv[1]); import _timing; "
          "print(_timing.device_line())")
  done = subprocess.run([sys.executable, "-c", code, str(SCRIPT.parent)],
                        capture_output=True, text=True, check=False)
  return done.stdout.strip() or f"unknown ({done.stderr.strip()[-200:]})"


if __name__ == "__main__":
  FLAGS.update(_define_flags())
  app.run(main)
