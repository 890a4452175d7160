"""How many samples a paired interval of a given width needs, read off the
verdicts of a finished (or part-way) evaluation.

A paired bootstrap interval (kvp_jax.evaluation._bootstrap) over n samples
narrows as 1 / sqrt(n) while the spread of the per-sample differences stays
what it is, so a comparison whose interval has half-width h at n samples
needs about

  n * (h / target) ** 2

samples for a half-width `target` (rounded up, at least 2). This is how a
suite's sample count is set before its test run: from the dev run's
verdicts, for the comparisons the test will report (every baseline,
verdicts.jsonl rows of kind "paired_every"). The estimate is as good as the
dev run's spread: a handful of samples estimates it loosely.
"""

from __future__ import annotations

import collections
import math
from typing import Iterable, Mapping, Sequence

# The verdict kinds read, in order of preference: KVP against every baseline
# (what a test reports), else against the best of each family.
KINDS = ("paired_every", "paired")
MIN_SAMPLES = 2


def samples_needed(comparison: Mapping, target_half_width: float) -> int:
  """Samples for an interval of half-width `target_half_width` in the
  comparison's cell, from its num_samples, low and high (the metric's
  units, e.g. agreement points)."""
  if target_half_width <= 0:
    raise ValueError(f"target half-width {target_half_width} is not > 0")
  n = int(comparison["num_samples"])
  half = (float(comparison["high"]) - float(comparison["low"])) / 2
  return max(MIN_SAMPLES, math.ceil(n * (half / target_half_width) ** 2))


def comparisons_of(verdicts: Iterable[Mapping],
                   metrics: Sequence[str] = ()) -> list[dict]:
  """The verdicts.jsonl rows read: those of the first of KINDS present
  (of `metrics` only, when given), with a finite interval."""
  rows = [dict(r) for r in verdicts if not metrics or r.get("metric") in
          metrics]
  for kind in KINDS:
    chosen = [r for r in rows if r.get("kind") == kind and
              all(math.isfinite(float(r[k])) for k in ("low", "high"))]
    if chosen:
      return chosen
  return []


def summarise(comparisons: Sequence[Mapping],
              target_half_width: float) -> list[dict]:
  """Per (suite, metric): the samples each comparison of the cell (every
  budget, protocol and baseline) needs; their median and maximum, and the
  comparison that needs the most.

  Returns:
    dicts with suite, metric, num_samples (the most any comparison had),
    num_comparisons, median_needed, max_needed, worst (its budget and
    baseline), sorted by suite and metric.
  """
  groups = collections.defaultdict(list)
  for c in comparisons:
    groups[(str(c["suite"]), str(c["metric"]))].append(c)
  out = []
  for (suite, metric), cs in sorted(groups.items()):
    needed = [samples_needed(c, target_half_width) for c in cs]
    worst = cs[max(range(len(cs)), key=needed.__getitem__)]
    ordered = sorted(needed)
    middle = len(ordered) // 2
    median = (ordered[middle] if len(ordered) % 2 else
              (ordered[middle - 1] + ordered[middle]) / 2)
    out.append(dict(
        suite=suite, metric=metric,
        num_samples=max(int(c["num_samples"]) for c in cs),
        num_comparisons=len(cs), median_needed=median,
        max_needed=max(needed),
        worst=f"b={worst.get('budget')} vs {worst.get('baseline')}"))
  return out


def markdown(summary: Sequence[Mapping], target_half_width: float) -> str:
  """The summary as a markdown table."""
  lines = [f"Samples for paired intervals of +-{target_half_width:g} "
           "(the metric's units), from the spread of each comparison:", "",
           "| suite | metric | samples now | comparisons | median needed | "
           "most needed | by |",
           "|---|---|---|---|---|---|---|"]
  lines += [f"| {s['suite']} | {s['metric']} | {s['num_samples']} | "
            f"{s['num_comparisons']} | {s['median_needed']:g} | "
            f"{s['max_needed']} | {s['worst']} |" for s in summary]
  return "\n".join(lines) + "\n"
