"""Aggregating per-sample results into tables and plots.

Accuracy is the mean over samples (x100, RULER's scoring); perplexity pools
the negative log-likelihood over every scored token; the normalised cost is
the mean over samples of each (layer, head)'s cost, then over heads. Each
suite also gets a "mean" group (the mean of its groups' values, perplexity
pooled over all tokens).
"""

from __future__ import annotations

import collections
import json
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from kvp_jax import _files
from kvp_jax.evaluation import _evicted_share
from kvp_jax.evaluation._paired import budget_order
from kvp_jax.evaluation._paired import is_extra_policy

FULL = "full"
# The tables and plots of today read these; the other metrics (fidelity,
# evicted share) get their own sections after them (kvp_jax.evaluation
# ._verdicts).
PRIMARY = ("accuracy", "perplexity", "normalised_cost")
_KEY = ("suite", "group", "scorer", "budget", "protocol", "allocation",
        "metric")


def _value(metric: str, rows: Sequence[dict]) -> float:
  if metric == "perplexity":
    return float(np.exp(sum(r["nll"] for r in rows) /
                        max(sum(r["tokens"] for r in rows), 1)))
  return float(np.mean([r["value"] for r in rows]))


def aggregate(rows: Sequence[dict]) -> list[dict]:
  """One row per (suite, group, scorer, budget, protocol, allocation)."""
  cells = collections.defaultdict(list)
  for r in rows:
    cells[tuple(str(r.get(k)) for k in _KEY)].append(r)
    mean_key = dict(r, group="mean")
    cells[tuple(str(mean_key.get(k)) for k in _KEY)].append(r)
  out = []
  for key, members in sorted(cells.items()):
    row = dict(zip(_KEY, key))
    metric = row["metric"]
    if row["group"] == "mean" and metric == "accuracy":
      per_group = collections.defaultdict(list)
      for m in members:
        per_group[m["group"]].append(m["value"])
      row["value"] = float(np.mean([np.mean(v) for v in per_group.values()]))
    else:
      row["value"] = _value(metric, members)
    row["num_samples"] = len(members)
    if metric == "evicted_share":
      row.update(_evicted_share_value(members))
    if metric == "normalised_cost":
      with warnings.catch_warnings():   # A head no sample informs: NaN.
        warnings.simplefilter("ignore", RuntimeWarning)
        heads = np.nanmean(np.asarray([m["per_head"] for m in members],
                                      float), axis=0)
      row["per_head"] = heads.tolist()
    if "cache_bytes" in members[0]:
      row["cache_bytes"] = float(np.mean([m["cache_bytes"] for m in members]))
    if "peak_bytes" in members[0]:
      row["peak_bytes"] = float(max(m["peak_bytes"] for m in members))
    out.append(row)
  return out


def _evicted_share_value(members: Sequence[dict]) -> dict:
  """A cell of evicted-share rows: each head's mean share over samples, then
  the geometric mean over heads (value), over the global layers and over
  the sliding-window ones."""
  shares = np.asarray([m["per_head"] for m in members], float)  # [S, L, K]
  geo = _evicted_share.aggregate_evicted_share(
      shares[..., None], members[0].get("global_layers", ()))
  return {"value": float(geo["all"][0]),
          "value_global": float(geo["global"][0]),
          "value_local": float(geo["local"][0]),
          "heads_global": int(geo["heads_global"][0])}


def by_protocol(rows: Sequence[dict]) -> list[dict]:
  """The rows for tables and plots: in a suite whose compressed cells use
  more than one protocol (an episodic suite's compress-once baselines),
  each compressed scorer is named with its protocol ("kvp (once)")."""
  protocols = collections.defaultdict(set)
  for r in rows:
    if r["scorer"] != FULL:
      protocols[r["suite"]].add(r.get("protocol"))
  return [dict(r, scorer=f"{r['scorer']} ({r.get('protocol')})",
               base_scorer=r["scorer"])
          if r["scorer"] != FULL and len(protocols[r["suite"]]) > 1 else r
          for r in rows]


def _base(row: dict) -> str:
  """A row's scorer before by_protocol named it with its protocol."""
  return row.get("base_scorer", row["scorer"])


def kvp_verdicts(rows: Sequence[dict]) -> list[str]:
  """Markdown table: at each suite's mean and each budget, KVP's mean
  against the best other deployable scorer's (neither the oracle nor the
  full cache). A comparison of means only: the verdicts, with paired
  intervals, are in the paired table (evaluation._verdicts). Empty without
  a "kvp" row."""
  means = [r for r in rows if r["group"] == "mean" and r["budget"] != FULL
           and r["metric"] in PRIMARY]
  if not any(r["scorer"] == "kvp" for r in means):
    return []
  lines = ["## KVP's mean against the best baseline's (mean over each "
           "suite; no interval: the verdicts with paired intervals are in "
           "the last table)", "",
           "| suite | budget | kvp | best baseline | means |",
           "|---|---|---|---|---|"]
  for suite in sorted({r["suite"] for r in means}):
    srows = [r for r in means if r["suite"] == suite]
    lower = srows[0]["metric"] in ("perplexity", "normalised_cost")
    protocols = sorted({str(r.get("protocol")) for r in srows})
    for b, p in sorted({(r["budget"], str(r.get("protocol")))
                        for r in srows},
                       key=lambda bp: (budget_order(bp[0]), bp[1])):
      cell = {r["scorer"]: r["value"] for r in srows
              if r["budget"] == b and str(r.get("protocol")) == p}
      others = {k: v for k, v in cell.items()
                if k not in ("kvp", "oracle", FULL) and
                not is_extra_policy(k)}
      if "kvp" not in cell or not others:
        continue
      name = (min if lower else max)(others, key=others.get)
      kvp, best = cell["kvp"], others[name]
      verdict = ("equal" if np.isclose(kvp, best, rtol=1e-6, atol=1e-9) else
                 "KVP's higher" if kvp > best else "KVP's lower")
      where = f"{b} ({p})" if len(protocols) > 1 else b
      lines.append(f"| {suite} | {where} | {kvp:.3f} | {best:.3f} ({name}) | "
                   f"{verdict} |")
  return lines + [""]


def markdown(rows: Sequence[dict], title: str = "",
             extra: Sequence[str] = ()) -> str:
  """KVP's verdicts, then per suite and group a scorers x budgets table
  (`rows` from aggregate(); primary metrics only), then the `extra` lines
  (the sections of kvp_jax.evaluation._verdicts)."""
  rows = [r for r in rows if r["metric"] in PRIMARY]
  lines = [f"# {title}" if title else "# Evaluation results", ""]
  lines += kvp_verdicts(rows)
  rows = by_protocol(rows)
  subset = False              # Some cell answered fewer samples than full.
  by_suite = collections.defaultdict(list)
  for r in rows:
    by_suite[r["suite"]].append(r)
  for suite, srows in by_suite.items():
    metric = srows[0]["metric"]
    better = "lower" if metric in ("perplexity", "normalised_cost") else \
        "higher"
    lines += [f"## {suite}: {metric} ({better} is better)", ""]
    groups = sorted({r["group"] for r in srows},
                    key=lambda g: (g == "mean", g))
    for group in groups:
      grows = [r for r in srows if r["group"] == group]
      budgets = sorted({r["budget"] for r in grows if r["budget"] != FULL},
                       key=budget_order)
      full = [r for r in grows if r["scorer"] == FULL]
      n = max(r["num_samples"] for r in grows)
      lines.append(f"### {group} ({n} samples)" +
                   (f"; full cache: {full[0]['value']:.2f}" if full else ""))
      lines.append("")
      lines.append("| scorer | " + " | ".join(
          f"b={b}" if b.isdigit() else b for b in budgets) + " |")
      lines.append("|---" * (len(budgets) + 1) + "|")
      scorers = sorted({r["scorer"] for r in grows if r["scorer"] != FULL})
      # A cell over fewer samples than the full cache's (the ruler suite's
      # answers="where_full_right") is marked and never the best.
      partial = lambda r, full=full: bool(full) and r["scorer"] != FULL and (
          r["num_samples"] < full[0]["num_samples"])
      best = {}
      for b in budgets:
        vals = [r["value"] for r in grows if r["budget"] == b and
                _base(r) != "oracle" and r["scorer"] != FULL
                and not partial(r)]
        if vals:
          best[b] = min(vals) if better == "lower" else max(vals)
      for s in scorers:
        cells = []
        for b in budgets:
          match = [r for r in grows if r["scorer"] == s and r["budget"] == b]
          if not match:
            cells.append("")
            continue
          v = match[0]["value"]
          text = f"{v:.3f}" if metric == "normalised_cost" else f"{v:.2f}"
          if partial(match[0]):
            text, subset = f"{text}†", True
          elif (_base(match[0]) != "oracle" and best.get(b) is not None
                and v == best[b]):
            text = f"**{text}**"
          cells.append(text)
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
      lines.append("")
  lines.append("Bold: the best deployable scorer at that budget (the oracle "
               "knows the future and is an upper bound).")
  if subset:
    lines.append("†: over fewer samples than the full cache (the samples "
                 "it answers right), so not comparable with its mean.")
  if extra:
    lines += [""] + list(extra)
  return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict], out_dir: Path) -> list[Path]:
  """One PNG per suite: metric of the "mean" group against cache size."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  paths = []
  rows = by_protocol(rows)
  for suite in sorted({r["suite"] for r in rows}):
    srows = [r for r in rows if r["suite"] == suite and r["group"] == "mean"
             and r["metric"] in PRIMARY]
    if not srows or srows[0]["metric"] == "normalised_cost":
      continue
    metric = srows[0]["metric"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for scorer in sorted({r["scorer"] for r in srows if r["scorer"] != FULL}):
      pts = sorted((int(r["budget"]), r["value"]) for r in srows
                   if r["scorer"] == scorer and r["budget"].isdigit())
      if pts:
        style = dict(linestyle=":", color="black") if scorer == "oracle" \
            else dict(marker="o", linewidth=2.2 if scorer == "kvp" or
                      is_extra_policy(scorer) else 1.2)
        ax.plot(*zip(*pts), label=scorer, **style)
    for r in srows:
      if r["scorer"] == FULL:
        ax.axhline(r["value"], color="gray", linestyle="--",
                   label="full cache")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("cache size per head (tokens)")
    ax.set_ylabel(metric + (" (%)" if metric == "accuracy" else ""))
    if metric == "perplexity":
      ax.set_yscale("log")
    ax.set_title(suite)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path = out_dir / f"{suite}.png"
    _files.save_figure(fig, path, dpi=120)
    paths.append(path)
  return paths


def write(rows: Sequence[dict], out_dir: Path, title: str = "",
          extra: Sequence[str] = ()) -> None:
  """results.jsonl, results.md (with the `extra` markdown lines after
  today's tables) and the plots, each written atomically."""
  out_dir.mkdir(parents=True, exist_ok=True)
  for name, text in (
      ("results.jsonl", "".join(json.dumps(r) + "\n" for r in rows)),
      ("results.md", markdown(rows, title, extra))):
    _files.atomic_write(out_dir / name, text)
  plot(rows, out_dir)
