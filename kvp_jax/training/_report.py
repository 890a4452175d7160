"""Validating the EMA params during training, and reporting it.

Each validation writes <workdir>/validation.md (the per-agent table),
appends to validation_history.jsonl, redraws validation.png and logs the
means to TensorBoard. The baselines' costs do not depend on the params:
they are computed at the first validation and kept in
validation_baselines.json for every later one (and a resumed run). In a
multi-process job every process validates (the sums are reduced over all
of them) and process 0 alone writes these files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from kvp_jax import _files
from kvp_jax import distributed
from kvp_jax.training import _history
from kvp_jax.training import _validation

BASELINES_FILE = "validation_baselines.json"
TABLE_FILE = "validation.md"


def validation_table(result: dict[str, np.ndarray], agent_names) -> str:
  """Markdown table: one row per agent, the policy beside the baselines."""
  cols = ["policy"] + list(_validation.BASELINES)
  lines = ["| agent | traces | " + " | ".join(cols) + " | best baseline |",
           "|---" * (len(cols) + 3) + "|"]
  for a, name in enumerate(agent_names):
    best = min(_validation.BASELINES, key=lambda b: result[b][a])
    cells = [f"{result[c][a]:.3f}" for c in cols]
    lines.append(f"| {name} | {int(result['count'][a])} | " +
                 " | ".join(cells) + f" | {best} |")
  means = [f"{np.mean(result[c]):.3f}" for c in cols]
  lines.append("| mean | | " + " | ".join(means) + " | |")
  return "\n".join(lines)


class Validator:
  """Validates params and reports each validation into the workdir.

  Args:
    workdir: the run's directory.
    evaluate: (params, with_baselines) -> {"policy": [A], baseline: [A],
      "count": [A]} (`_validation.evaluate` over the validation split).
    agent_names: per agent, its name ("L3H0").
    store_path: named in validation.md.
    writer: a tensorboardX SummaryWriter, or None.
  """

  def __init__(self, workdir: Path, evaluate: Callable,
               agent_names: Sequence[str], store_path: Path, writer=None):
    self.workdir = Path(workdir)
    self.evaluate = evaluate
    self.agent_names = list(agent_names)
    self.store_path = store_path
    self.writer = writer
    path = self.workdir / BASELINES_FILE
    self.baselines = None
    if path.exists():
      self.baselines = {k: np.asarray(v) for k, v in
                        json.loads(path.read_text()).items()}

  def validate(self, params) -> tuple[dict[str, np.ndarray], float]:
    """(per-agent costs of the policy and the baselines, reward = minus the
    policy's mean cost); computes the baselines at the first call."""
    if self.baselines is None:
      self.baselines = self.evaluate(params, True)
      if distributed.is_primary():
        _files.atomic_write_json(
            self.workdir / BASELINES_FILE,
            {k: v.tolist() for k, v in self.baselines.items()}, indent=2,
            default=float)
    result = dict(self.baselines, **{
        k: v for k, v in self.evaluate(params, False).items()})
    return result, -float(np.mean(result["policy"]))

  def report(self, step: int, result: dict[str, np.ndarray],
             reward: float) -> None:
    """Writes the table, the history record, the plot and the scalars
    (process 0 only)."""
    if not distributed.is_primary():
      return
    if self.writer:
      self.writer.add_scalar("validation/reward", reward, step)
      for name in ("policy",) + _validation.BASELINES:
        self.writer.add_scalar(f"validation/cost_{name}",
                               float(np.mean(result[name])), step)
    _files.atomic_write(
        self.workdir / TABLE_FILE,
        f"step {step}, EMA params, mean normalised cost on "
        f"{self.store_path} (validation split; oracle = 1.000, lower is "
        f"better)\n\n" + validation_table(result, self.agent_names) + "\n")
    _history.append_validation(self.workdir, step, {
        k: result[k] for k in ("policy",) + _validation.BASELINES})
    _history.plot_history(_history.read_history(self.workdir),
                          self.agent_names,
                          self.workdir / _history.PLOT_FILE)

  def validate_and_report(self, step: int, params
                          ) -> tuple[dict[str, np.ndarray], float]:
    """`validate`, then `report`; returns (result, reward)."""
    result, reward = self.validate(params)
    self.report(step, result, reward)
    return result, reward
