"""Per agent, the EMA params of its own best validation step (the paper's
choice; `train.best_per_agent`).

The default best checkpoint (<workdir>/best) is one step for all agents:
the step whose mean validation cost is lowest, so every exported agent comes
from the same point of training. With train.best_per_agent the run also
keeps <workdir>/best_per_agent: agent a's params are those of the
validation step where agent a's own cost was lowest (summary.json's
"best_per_agent" holds each agent's cost and step). Training itself is the
same either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

PER_AGENT_DIR = "best_per_agent"


def merge_best(old_params, old_costs: np.ndarray | None, new_params,
               new_costs: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
  """Keeps, per agent, the params of the lower validation cost.

  Args:
    old_params, new_params: agent params, every leaf [A, ...] (old_params
      None: nothing kept yet).
    old_costs, new_costs: [A] validation costs (lower is better).
  Returns:
    (params, costs [A], improved [A] bool): agent a from new_params where
    improved[a] (new cost strictly lower, or nothing kept yet).
  """
  new_costs = np.asarray(new_costs, np.float64)
  if old_params is None or old_costs is None:
    improved = np.ones(new_costs.shape, bool)
    return jax.tree_util.tree_map(np.asarray, new_params), new_costs, improved
  old_costs = np.asarray(old_costs, np.float64)
  improved = new_costs < old_costs

  def pick(old, new):
    mask = improved.reshape((-1,) + (1,) * (np.ndim(new) - 1))
    return np.where(mask, np.asarray(new), np.asarray(old))
  params = jax.tree_util.tree_map(pick, old_params, new_params)
  return params, np.where(improved, new_costs, old_costs), improved


class PerAgentBest:
  """<workdir>/best_per_agent: kept params, updated at each validation."""

  def __init__(self, workdir: str | Path):
    self.manager = ocp.CheckpointManager(
        (Path(workdir) / PER_AGENT_DIR).absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))
    self._params = None

  def _kept(self):
    if self._params is None and self.manager.latest_step() is not None:
      self._params = self.manager.restore(
          self.manager.latest_step(),
          args=ocp.args.Composite(params=ocp.args.StandardRestore())).params
    return self._params

  def update(self, step: int, ema_params, costs, summary: dict) -> None:
    """Merges this validation's EMA params into the kept ones; records
    each agent's best cost and step in summary["best_per_agent"]."""
    record = summary.get("best_per_agent")
    old_costs = None if record is None else record["cost"]
    params, best, improved = merge_best(
        None if record is None else self._kept(), old_costs,
        jax.device_get(ema_params), costs)
    if not improved.any():
      return
    steps = [step if i else s for i, s in zip(
        improved, record["step"] if record else [step] * len(best))]
    self.manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params)))
    self.manager.wait_until_finished()
    self._params = params
    summary["best_per_agent"] = {"cost": best.tolist(), "step": steps}

  def close(self) -> None:
    self.manager.close()


def restore_per_agent_params(workdir: str | Path):
  """(params, step of the last update) of <workdir>/best_per_agent."""
  directory = Path(workdir).absolute() / PER_AGENT_DIR
  with ocp.CheckpointManager(directory) as manager:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"no best_per_agent checkpoint under "
                              f"{directory} (train with "
                              f"--config.train.best_per_agent=true)")
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(directory / str(step) / "params"), step
