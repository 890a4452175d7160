"""Validation history of a training run and its plot.

Each validation appends one JSON line to <workdir>/validation_history.jsonl:
{"step": s, "costs": {name: [cost per agent]}} with name "policy" or a
baseline. A resumed run may validate a step again; the last record of a step
wins. validation.png shows the mean normalised cost against the step (left)
and each agent's cost at the last validation beside the best baseline
(right).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from kvp_jax import _files

HISTORY_FILE = "validation_history.jsonl"
PLOT_FILE = "validation.png"


def append_validation(workdir: Path, step: int,
                      costs: dict[str, Sequence[float]]) -> None:
  """Appends one validation record (a whole line, flushed and synced; a
  torn last line left by a killed writer is dropped first)."""
  _files.JsonlLog(Path(workdir) / HISTORY_FILE, sync=True).append([
      {"step": int(step), "costs": {
          k: [float(x) for x in v] for k, v in costs.items()}}])


def read_history(workdir: Path) -> list[dict]:
  """The records by step (the last of a repeated step); a torn last line,
  from a job killed mid-write, is skipped."""
  path = Path(workdir) / HISTORY_FILE
  if not path.exists():
    return []
  by_step = {}
  for line in path.read_text(encoding="utf-8").splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    by_step[record["step"]] = record
  return [by_step[s] for s in sorted(by_step)]


def plot_history(history: Sequence[dict], agent_names: Sequence[str],
                 path: Path) -> Path | None:
  """Writes the two-panel validation plot; None without any record."""
  if not history:
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  names = list(history[-1]["costs"])
  fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
  steps = [r["step"] for r in history]
  for name in names:
    means = [float(np.mean(r["costs"][name])) if name in r["costs"]
             else np.nan for r in history]
    left.plot(steps, means, marker="o", label=name,
              linewidth=2.2 if name == "policy" else 1.2)
  left.set_yscale("log")
  left.set_xlabel("training step")
  left.set_ylabel("mean normalised cost (oracle = 1)")
  left.grid(alpha=0.3)
  left.legend(fontsize=8)
  last = history[-1]["costs"]
  baselines = [n for n in names if n != "policy"]
  best = np.min(np.stack([last[n] for n in baselines]), axis=0) \
      if baselines else None
  x = np.arange(len(last["policy"]))
  right.bar(x - 0.2, last["policy"], width=0.4, label="policy")
  if best is not None:
    right.bar(x + 0.2, best, width=0.4, label="best baseline")
  right.set_xticks(x, list(agent_names)[:len(x)], rotation=90, fontsize=7)
  right.set_yscale("log")
  right.set_ylabel(f"normalised cost at step {history[-1]['step']}")
  right.grid(alpha=0.3, axis="y")
  right.legend(fontsize=8)
  fig.tight_layout()
  _files.save_figure(fig, path, dpi=110)
  return path
