"""Plots of paired comparisons (kvp_jax.evaluation._paired): per suite and
metric, each compared method's difference from its baselines against the
budget, with the bootstrap interval as a band."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from kvp_jax import _files
from kvp_jax.evaluation import _paired


def plot_paired(comparisons: Sequence[dict], out_dir: Path) -> list[Path]:
  """One PNG per (suite, metric): one panel per compared method (KVP, then
  each extra policy), each with its difference from the best baseline of
  each family (and from each reference policy) against the budget, the
  bootstrap interval drawn as a band; a family keeps its colour across
  panels, and the panels share the y axis."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  paths = []
  for suite, metric in sorted({(c["suite"], c["metric"])
                               for c in comparisons}):
    rows = [c for c in comparisons if c["suite"] == suite and
            c["metric"] == metric and str(c["budget"]).isdigit()]
    if not rows:
      continue
    # One panel per method, and per protocol where the suite has several.
    methods = sorted({(c.get("method", "kvp"), str(c.get("protocol")))
                      for c in rows}, key=lambda m: (m[0] != "kvp", m))
    several = len({p for _, p in methods}) > 1
    families = sorted({c["family"] for c in rows},
                      key=lambda f: (f not in _paired.baseline_families(), f))
    colours = {f: f"C{i % 10}" for i, f in enumerate(families)}
    fig, axes = panel_grid(plt, len(methods))
    better = "lower" if metric in _paired.LOWER_IS_BETTER else "higher"
    for ax, (method, protocol) in zip(axes.flat, methods):
      for family in families:
        pts = sorted((int(c["budget"]), c["difference"], c["low"],
                      c["high"]) for c in rows if c["family"] == family and
                     c.get("method", "kvp") == method and
                     str(c.get("protocol")) == protocol)
        if not pts:
          continue
        x, mean, low, high = zip(*pts)
        # A reference's family is the one policy itself, not a best-of.
        other = (family if family not in _paired.baseline_families()
                 else f"best {family}")
        ax.plot(x, mean, marker="o", color=colours[family],
                label=f"vs {other}")
        ax.fill_between(x, low, high, color=colours[family], alpha=0.25)
      ax.axhline(0.0, color="gray", linestyle="--")
      ax.set_xscale("log", base=2)
      ax.set_title(("KVP" if method == "kvp" else method) +
                   (f" ({protocol})" if several else ""), fontsize=10)
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)
    label_panels(axes, len(methods), "cache size per head (tokens)",
                 f"{metric} difference\n({better} is better for the "
                 "panel's method)")
    fig.suptitle(f"{suite}: {metric}, paired, 95% bootstrap band")
    fig.tight_layout()
    path = out_dir / f"{suite}_{metric}_paired.png"
    _files.save_figure(fig, path, dpi=110)
    paths.append(path)
  return paths


def panel_grid(plt, n: int, cols: int = 3):
  """(figure, [rows, cols] axes) for n panels sharing the y axis."""
  cols = min(cols, n)
  rows = -(-n // cols)
  return plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows),
                      sharey=True, squeeze=False)


def label_panels(axes, n: int, xlabel: str, ylabel: str) -> None:
  """Hides the panels past the first n; labels the bottom row's x axes and
  the first column's y axes."""
  for ax in axes.flat[n:]:
    ax.set_visible(False)
  for ax in axes[-1]:
    ax.set_xlabel(xlabel)
  for ax in axes[:, 0]:
    ax.set_ylabel(ylabel, fontsize=9)
