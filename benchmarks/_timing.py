"""Helpers shared by the benchmark scripts: timing, JSON lines, the header.

Imported as `import _timing` (a script's own directory is first on sys.path
when it is run as `python benchmarks/<name>.py`). Importing it also puts
the checkout's root on sys.path, so that the scripts read the experiment
configs (`experiments/`), which `pip install` does not install.
"""

import json
from pathlib import Path
import resource
import statistics
import sys
import time

import jax

_CHECKOUT = str(Path(__file__).resolve().parents[1])
if _CHECKOUT not in sys.path:
  sys.path.append(_CHECKOUT)


def median_seconds(fn, repeats: int) -> float:
  """Median wall time of `fn()` over `repeats` runs after one warm-up run
  (compilation); every run is waited for with block_until_ready."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def peak_rss_mb() -> float:
  """The process's peak resident set size so far, in MiB (Linux: KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_peak_mb() -> float | None:
  """The device allocator's peak bytes in use (MiB), where it reports them
  (GPUs; not the CPU backend)."""
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / 2 ** 20


def device_line() -> str:
  """`platform:device_kind, jax <version>` of the first device."""
  d = jax.devices()[0]
  return f"{d.platform}:{d.device_kind}, jax {jax.__version__}"


class Emitter:
  """Prints one JSON line per measurement (and writes it to --out)."""

  def __init__(self, out_path: str | None):
    self.rows = []
    self._out = open(out_path, "w", encoding="utf-8") if out_path else None

  def emit(self, row: dict) -> dict:
    self.rows.append(row)
    line = json.dumps(row)
    print(line, flush=True)
    if self._out:
      self._out.write(line + "\n")
      self._out.flush()
    return row


def table(header: list[str], rows: list[list]) -> str:
  """A markdown table."""
  lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
  lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
  return "\n".join(lines)


def cell(value) -> str:
  """A table cell: floats to about 3 significant digits, thousands split."""
  if isinstance(value, float):
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
  return "n/a" if value is None else str(value)


def rows_table(rows: list[dict], keys: list[str]) -> str:
  """A markdown table of some fields of JSON rows, one row each."""
  return table(keys, [[cell(r.get(k)) for k in keys] for r in rows])
