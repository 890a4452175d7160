"""Metrics against the context length: for a grid with one suite per length
(experiments/long_context.py: "long_text_4k", "long_text_8k", ...), one
figure per suite family and metric, one panel per budget, one line per
scorer: the mean over each length's samples, its 95% bootstrap interval as
a band.

A row's context length is its group's ("documents_python_doc@8192",
"niah_single_1@8192": the task at its target length); its suite family is
the suite's name without a trailing "_<n>k". A family is plotted when its
rows span at least two lengths.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from kvp_jax import _files
from kvp_jax.evaluation import _bootstrap
from kvp_jax.evaluation import _paired
from kvp_jax.evaluation import _paired_plots

METRICS = ("agreement", "kl", "retention")
NUM_RESAMPLES = 2000
_LENGTH_SUFFIX = re.compile(r"_\d+k$")


def context_length(group: str) -> int | None:
  """8192 for "task@8192"; None for a group without a length."""
  _, at, length = str(group).rpartition("@")
  return int(length) if at and length.isdigit() else None


def suite_family(suite: str) -> str:
  """"long_text" for "long_text_8k"; other names unchanged."""
  return _LENGTH_SUFFIX.sub("", suite)


def by_length(samples: Sequence[Mapping], metric: str
              ) -> dict[tuple[str, str, str], list[tuple]]:
  """{(suite family, budget, scorer): [(length, mean, low, high, samples)]}
  over the finite per-sample values of `metric` (lengths ascending; the
  interval is a percentile bootstrap of the mean, seed 0)."""
  values = collections.defaultdict(list)
  for r in samples:
    length = context_length(r.get("group", ""))
    if (r.get("metric") != metric or length is None or
        not np.isfinite(r["value"])):
      continue
    key = (suite_family(r["suite"]), str(r["budget"]), r["scorer"])
    values[key + (length,)].append(float(r["value"]))
  out = collections.defaultdict(list)
  for (family, budget, scorer, length), v in sorted(values.items()):
    v = np.asarray(v)
    interval = _bootstrap.paired_bootstrap(
        v, np.zeros_like(v), num_resamples=NUM_RESAMPLES, seed=0)
    out[(family, budget, scorer)].append(
        (length, float(v.mean()), interval.low, interval.high, len(v)))
  return dict(out)


def plot_by_length(samples: Sequence[Mapping], out_dir: Path,
                   metrics: Sequence[str] = METRICS) -> list[Path]:
  """One PNG per (suite family, metric) spanning two or more lengths:
  <family>_<metric>_by_length.png. Returns the paths written."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  paths = []
  for metric in metrics:
    lines = by_length(samples, metric)
    for family in sorted({k[0] for k in lines}):
      mine = {k: v for k, v in lines.items() if k[0] == family}
      lengths = sorted({p[0] for v in mine.values() for p in v})
      if len(lengths) < 2:
        continue
      budgets = sorted({k[1] for k in mine}, key=_paired.budget_order)
      scorers = sorted({k[2] for k in mine}, key=lambda s: (s != "kvp", s))
      colours = {s: f"C{i % 10}" for i, s in enumerate(scorers)}
      fig, axes = _paired_plots.panel_grid(plt, len(budgets))
      for ax, budget in zip(axes.flat, budgets):
        for scorer in scorers:
          pts = mine.get((family, budget, scorer))
          if not pts:
            continue
          x, mean, low, high, _ = zip(*pts)
          ax.plot(x, mean, marker="o", color=colours[scorer], label=scorer,
                  linewidth=2.2 if scorer == "kvp" else 1.2)
          ax.fill_between(x, low, high, color=colours[scorer], alpha=0.15)
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [f"{n // 1024}k" if n % 1024 == 0 else str(n)
                                for n in lengths])
        ax.minorticks_off()
        ax.set_title(f"budget {budget}", fontsize=10)
        ax.grid(alpha=0.3)
      _paired_plots.label_panels(axes, len(budgets),
                                 "context length (tokens)", metric)
      axes.flat[0].legend(fontsize=7)
      fig.suptitle(f"{family}: {metric} against the context length "
                   "(mean, 95% bootstrap band)")
      fig.tight_layout()
      path = out_dir / f"{family}_{metric}_by_length.png"
      _files.save_figure(fig, path, dpi=110)
      paths.append(path)
  return paths
