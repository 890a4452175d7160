"""Reading trained agent params back out of a training workdir."""

from __future__ import annotations

from pathlib import Path

import orbax.checkpoint as ocp


def restore_params(workdir: str | Path, *, which: str = "best",
                   ema: bool = True):
  """The agents' params of a run (numpy arrays with a leading [A] axis).

  Args:
    workdir: the training run's directory.
    which: "best" (by validation reward) or "latest".
    ema: the EMA weights (what the method evaluates) or the raw ones.
  Returns:
    (params, step).
  Raises:
    FileNotFoundError naming the directory when there is no checkpoint.
  """
  if which not in ("best", "latest"):
    raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
  directory = Path(workdir).absolute() / (
      "best" if which == "best" else "checkpoints")
  with ocp.CheckpointManager(directory) as manager:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"no {which} checkpoint under {directory}")
  with ocp.StandardCheckpointer() as ckptr:
    state = ckptr.restore(directory / str(step) / "state")
  return state["ema_params" if ema else "params"], step
