"""How many samples a paired interval of a given width needs, read off the
verdicts of a finished (or part-way) evaluation.

A paired bootstrap interval (kvp_jax.evaluation._bootstrap) over n samples
narrows as 1 / sqrt(n) while the spread of the per-sample differences stays
what it is, so a comparison whose interval has half-width h at n samples
needs about

  n * (h / target) ** 2 * n / (n - 1)

samples for a half-width `target` (rounded up): the percentile interval
reads the plug-in variance, (n - 1) / n of the unbiased one. From a few
samples the spread itself is loosely known, so each estimate also comes
with the samples needed at the 90% upper confidence bound of the variance
(chi-square with n - 1 degrees of freedom): from 4 samples that is 5 times
the estimate, from 16 twice. This is how a suite's sample count is set
before its test run: from the dev run's verdicts, for the comparisons the
test will report (KVP against every baseline, verdicts.jsonl rows of kind
"paired_every").
"""

from __future__ import annotations

import collections
import math
from typing import Iterable, Mapping, Sequence

from scipy import stats

# The verdict kinds read, in order of preference, per suite: KVP against
# every baseline (what a test reports), else against the best of each family.
KINDS = ("paired_every", "paired")
METHOD = "kvp"
UPPER_CONFIDENCE = 0.9


def samples_needed(comparison: Mapping, target_half_width: float, *,
                   upper: bool = False) -> int:
  """Samples for an interval of half-width `target_half_width` in the
  comparison's cell, from its num_samples (at least 2), low and high (the
  metric's units, e.g. agreement points); upper=True: at the 90% upper
  confidence bound of the differences' variance."""
  if target_half_width <= 0:
    raise ValueError(f"target half-width {target_half_width} is not > 0")
  n = int(comparison["num_samples"])
  if n < 2:
    raise ValueError(f"{n} sample(s): a spread needs at least 2")
  half = (float(comparison["high"]) - float(comparison["low"])) / 2
  needed = n * (half / target_half_width) ** 2 * n / (n - 1)
  if upper:
    needed *= (n - 1) / stats.chi2.ppf(1 - UPPER_CONFIDENCE, n - 1)
  return max(2, math.ceil(needed - 1e-9))


def comparisons_of(verdicts: Iterable[Mapping],
                   metrics: Sequence[str] = ()) -> list[dict]:
  """The verdicts.jsonl rows read: shipped KVP's (method "kvp"), of
  `metrics` only when given, with a finite interval over at least 2
  samples; per suite, those of the first of KINDS it has."""
  rows = [dict(r) for r in verdicts
          if r.get("method") == METHOD and r.get("kind") in KINDS
          and (not metrics or r.get("metric") in metrics)
          and int(r.get("num_samples", 0)) >= 2
          and all(math.isfinite(float(r[k])) for k in ("low", "high"))]
  out = []
  for suite in dict.fromkeys(r["suite"] for r in rows):
    mine = [r for r in rows if r["suite"] == suite]
    kind = next(k for k in KINDS if any(r["kind"] == k for r in mine))
    out += [r for r in mine if r["kind"] == kind]
  return out


def summarise(comparisons: Sequence[Mapping],
              target_half_width: float) -> list[dict]:
  """Per (suite, metric): the samples each comparison of the cell (every
  budget, protocol and baseline) needs; their median and maximum, the
  maximum at the 90% upper bound of the variance, and the comparison that
  needs the most.

  Returns:
    dicts with suite, metric, num_samples (the most any comparison had),
    num_comparisons, median_needed, max_needed, max_needed_upper, worst
    (its budget, protocol and baseline), sorted by suite and metric.
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
        max_needed_upper=max(samples_needed(c, target_half_width, upper=True)
                             for c in cs),
        worst=(f"b={worst.get('budget')} {worst.get('protocol')} vs "
               f"{worst.get('baseline')}")))
  return out


def markdown(summary: Sequence[Mapping], target_half_width: float) -> str:
  """The summary as a markdown table."""
  lines = [f"Samples for paired 95% intervals of +-{target_half_width:g} "
           "(the metric's units) for every comparison, from the spread of "
           "each (samples of the suite: for RULER-style suites, of all its "
           "tasks together):", "",
           "| suite | metric | samples now | comparisons | median needed | "
           "most needed | most needed, 90% upper bound | by |",
           "|---|---|---|---|---|---|---|---|"]
  lines += [f"| {s['suite']} | {s['metric']} | {s['num_samples']} | "
            f"{s['num_comparisons']} | {s['median_needed']:g} | "
            f"{s['max_needed']} | {s['max_needed_upper']} | {s['worst']} |"
            for s in summary]
  return "\n".join(lines) + "\n"
