"""Verdicts that can tell: answer retention, fidelity and evicted-share
tables, and KVP's paired bootstrap comparisons, from the per-sample rows.

Answer retention (RULER-style suites): of the samples the full cache
answers right (accuracy 100), the share a compressed cell still answers
right (accuracy 100), x100. Per sample it is a row of metric "retention"
(100 or 0) for each compressed cell of a sample the full cache got right.

Paired comparisons: per (suite, budget, metric) KVP minus the best
query-free and the best query-aware baseline over the samples both have
(_paired.kvp_against_baselines), with a seeded 95% percentile bootstrap of
NUM_RESAMPLES resamples, for PAIRED_METRICS; each extra policy of the grid
(eval.policies, "kvp_<label>") likewise, and also against each reference
policy (eval.references, default "kvp"). Rows with a non-finite value
(an evicted share where no head holds more than the budget) are left out.

Multiplicity: every comparison keeps its unadjusted interval and p-value
and gains p_holm and verdict_holm, Holm-adjusted within its family (one
per suite, metric and compared method: every budget x every compared
baseline; _multiplicity). KVP is also compared with every baseline of each
family (kind "paired_every"), so that a claim over a family does not rest
on a baseline picked as the best on the same samples.

Everything here is written beside results.jsonl, never into it:
verdicts.jsonl (one row per retention cell, kind "retention", and per
comparison, kinds "paired", "paired_every" and "paired_group"), one PNG per (suite, metric) of the paired
differences against the budget with the interval as a band, and markdown
sections that results.md appends after today's tables.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from kvp_jax import _files
from kvp_jax.evaluation import _length_plots
from kvp_jax.evaluation import _multiplicity
from kvp_jax.evaluation import _paired
from kvp_jax.evaluation import _paired_plots
from kvp_jax.evaluation import _paired_tables
from kvp_jax.evaluation import _report

FULL = _report.FULL
PAIRED_METRICS = ("accuracy", "retention", "agreement", "kl", "fidelity_ll",
                  "perplexity", "evicted_share")
FIDELITY = ("agreement", "kl", "fidelity_ll")
NUM_RESAMPLES = 10000
SEED = 0
_RIGHT = 100.0 - 1e-6        # RULER's score of a fully right answer.
_DESCRIPTION = {
    "agreement": "top-1 agreement with the full cache (%, higher is better)",
    "kl": "mean KL(full || compressed) per token (nats, lower is better)",
    "fidelity_ll": "mean log-likelihood per token of the full cache's "
                   "tokens (higher is better)",
}


def retention_rows(samples: Sequence[dict]) -> list[dict]:
  """Per-sample "retention" rows (100: still right, 0: lost) of every
  compressed accuracy row whose sample the full cache answers right."""
  right = {(r["suite"], str(r["sample"])) for r in samples
           if r["metric"] == "accuracy" and r["scorer"] == FULL
           and r["value"] >= _RIGHT}
  out = []
  for r in samples:
    if (r["metric"] != "accuracy" or r["scorer"] == FULL or
        (r["suite"], str(r["sample"])) not in right):
      continue
    row = {k: v for k, v in r.items() if k != "prediction"}
    row.update(metric="retention", value=100.0 * (r["value"] >= _RIGHT))
    out.append(row)
  return out


def paired_comparisons(samples: Sequence[dict],
                       references: Sequence[str] = ("kvp",)) -> list[dict]:
  """_paired.kvp_against_baselines over the compressed cells of
  PAIRED_METRICS (retention rows included), finite values only: KVP's, each
  extra policy's (also against each of `references`, a family of one
  policy named after it), then those of _paired.OTHER_METHODS (epicache+kvp
  against epicache)."""
  rows = _compressed(samples)
  out = _paired.kvp_against_baselines(rows, num_resamples=NUM_RESAMPLES,
                                      seed=SEED)
  # More policies of one grid (eval.policies): each against the baselines
  # and against each reference policy but itself.
  for method in sorted({r["scorer"] for r in rows
                        if _paired.is_extra_policy(r["scorer"])}):
    families = _paired.baseline_families()
    families.update((ref, (ref,)) for ref in references if ref != method)
    out += _paired.kvp_against_baselines(
        rows, kvp=method, families=families, num_resamples=NUM_RESAMPLES,
        seed=SEED)
  for method, families in _paired.OTHER_METHODS.items():
    out += _paired.kvp_against_baselines(
        rows, kvp=method, families=families, num_resamples=NUM_RESAMPLES,
        seed=SEED)
  return out + _paired.against_compress_once(
      rows, num_resamples=NUM_RESAMPLES, seed=SEED)


def every_baseline(samples: Sequence[dict]) -> list[dict]:
  """KVP against every baseline of each family (not only the best of the
  cell), on PAIRED_METRICS: a claim over a whole family then needs no
  baseline picked on the same data."""
  return _paired.kvp_against_baselines(_compressed(samples), every=True,
                                       num_resamples=NUM_RESAMPLES, seed=SEED)


def _compressed(samples: Sequence[dict]) -> list[dict]:
  """The compressed cells' finite rows of PAIRED_METRICS, retention rows
  included."""
  return [r for r in list(samples) + retention_rows(samples)
          if r["metric"] in PAIRED_METRICS and r["scorer"] != FULL
          and str(r["budget"]) != FULL and math.isfinite(r["value"])]


GROUP_METRICS = ("agreement",)


def group_comparisons(samples: Sequence[dict],
                      metrics: Sequence[str] = GROUP_METRICS) -> list[dict]:
  """KVP against the best query-free and query-aware baseline within each
  group of a suite (a RULER-style task at one length), paired as
  paired_comparisons, on `metrics`: where a suite's verdict comes from.
  Each entry's suite is "<suite>/<group>"; suites with one group are left
  out (their verdicts are the suite's)."""
  groups: dict[str, set] = {}
  for r in samples:
    groups.setdefault(r["suite"], set()).add(r.get("group"))
  rows = [dict(r, suite=f"{r['suite']}/{r.get('group')}") for r in samples
          if r["metric"] in metrics and len(groups[r["suite"]]) > 1
          and r["scorer"] != FULL and str(r["budget"]) != FULL
          and math.isfinite(r["value"])]
  return _paired.kvp_against_baselines(rows, num_resamples=NUM_RESAMPLES,
                                       seed=SEED)


def _table(rows: Sequence[dict], cell) -> list[str]:
  """A scorers x budgets markdown table of the rows; cell(row) -> text."""
  budgets = sorted({str(r["budget"]) for r in rows}, key=_paired.budget_order)
  lines = ["| scorer | " + " | ".join(f"b={b}" for b in budgets) + " |",
           "|---" * (len(budgets) + 1) + "|"]
  for s in sorted({r["scorer"] for r in rows}):
    by_budget = {str(r["budget"]): r for r in rows if r["scorer"] == s}
    lines.append(f"| {s} | " + " | ".join(
        cell(by_budget[b]) if b in by_budget else "" for b in budgets) + " |")
  return lines + [""]


def retention_markdown(aggregated: Sequence[dict],
                       retention: Sequence[dict]) -> list[str]:
  """Per RULER-style suite (mean group): raw accuracy / answer retention;
  the raw accuracy only of cells that answered every sample the full cache
  did (not where compressed cells answered only the samples the full cache
  gets right, kvp_jax.evaluation._ruler_suite)."""
  means = [r for r in aggregated
           if r["metric"] == "accuracy" and r["group"] == "mean"]
  full_n = {r["suite"]: r.get("num_samples") for r in means
            if r["scorer"] == FULL}
  acc = {(r["suite"], r["scorer"], r["budget"]): r for r in means
         if r.get("num_samples") == full_n.get(r["suite"])}
  lines = []
  for suite in sorted({r["suite"] for r in retention}):
    rows = [r for r in retention if r["suite"] == suite and
            r["group"] == "mean"]
    n = max(r["num_samples"] for r in rows)
    lines += [f"## {suite}: answer retention", "",
              f"accuracy / retention: of the samples the full cache answers "
              f"right, the share still answered right (%; up to {n} "
              f"samples per cell).", ""]
    lines += _table(rows, lambda r: (
        f"{acc[(r['suite'], r['scorer'], r['budget'])]['value']:.2f} / "
        if (r["suite"], r["scorer"], r["budget"]) in acc else "") +
                    f"{r['value']:.2f}")
  return lines


def fidelity_markdown(aggregated: Sequence[dict]) -> list[str]:
  """Per suite and fidelity metric (mean group): scorers x budgets."""
  lines = []
  for suite in sorted({r["suite"] for r in aggregated}):
    for metric in FIDELITY:
      rows = [r for r in aggregated if r["suite"] == suite and
              r["metric"] == metric and r["group"] == "mean"]
      if rows:
        lines += [f"## {suite}: {_DESCRIPTION[metric]}", ""]
        lines += _table(rows, lambda r: f"{r['value']:.3f}")
  return lines


def evicted_share_markdown(aggregated: Sequence[dict]) -> list[str]:
  """Per attention-cost suite: geometric mean over heads of the evicted
  share of future importance, all layers (global layers in brackets)."""
  lines = []
  for suite in sorted({r["suite"] for r in aggregated
                       if r["metric"] == "evicted_share"}):
    rows = [r for r in aggregated if r["suite"] == suite and
            r["metric"] == "evicted_share" and r["group"] == "mean"]
    lines += [f"## {suite}: evicted share of future importance at fixed "
              f"budgets (geometric mean over heads; global layers in "
              f"brackets; lower is better)", ""]
    lines += _table(rows, lambda r: f"{r['value']:.4f} "
                    f"[{r.get('value_global', float('nan')):.4f}]")
  return lines


def memory_markdown(aggregated: Sequence[dict]) -> list[str]:
  """Per suite whose rows record peak_bytes (episodic suites): the most KV
  cache memory a cell held at once, all its caches together (MiB)."""
  lines = []
  for suite in sorted({r["suite"] for r in aggregated if "peak_bytes" in r}):
    rows = [r for r in aggregated if r["suite"] == suite and
            r["group"] == "mean" and "peak_bytes" in r and
            r["metric"] == "accuracy"]
    lines += [f"## {suite}: peak KV cache memory (MiB, every cache a method "
              f"holds at once, the block being prefilled included)", ""]
    lines += _table(rows, lambda r: f"{r['peak_bytes'] / 2**20:.1f}")
  return lines


def write(samples: Sequence[dict], aggregated: Sequence[dict],
          out_dir: Path, references: Sequence[str] = ("kvp",)) -> list[str]:
  """verdicts.jsonl and the paired plots; returns the markdown sections
  (retention, fidelity, evicted share, memory, paired comparisons).
  `references`: as paired_comparisons."""
  out_dir.mkdir(parents=True, exist_ok=True)
  retained = retention_rows(samples)
  retention = _report.aggregate(retained)
  comparisons = _multiplicity.adjust_comparisons(
      paired_comparisons(samples, references))
  every = _multiplicity.adjust_comparisons(every_baseline(samples))
  by_group = group_comparisons(samples)
  rows = ([dict(r, kind="retention") for r in retention] +
          [dict(c, kind="paired") for c in comparisons] +
          [dict(c, kind="paired_every") for c in every] +
          [dict(c, kind="paired_group") for c in by_group])
  _files.atomic_write(out_dir / "verdicts.jsonl",
                      "".join(json.dumps(r) + "\n" for r in rows))
  _paired_plots.plot_paired(comparisons, out_dir)
  _length_plots.plot_by_length(list(samples) + retained, out_dir)
  tables = _report.by_protocol(aggregated)
  return (retention_markdown(tables, _report.by_protocol(retention)) +
          fidelity_markdown(tables) + evicted_share_markdown(tables) +
          memory_markdown(tables) +
          _paired_tables.summary_markdown(comparisons) +
          _paired_tables.seed_spread_markdown(comparisons) +
          _paired_tables.group_markdown(by_group) +
          _paired_tables.comparisons_markdown(comparisons))
