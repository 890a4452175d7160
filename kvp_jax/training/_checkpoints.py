"""A run's orbax checkpoints and its summary.json.

<workdir>/checkpoints  the latest train state and grain iterator (resume);
<workdir>/best         the state of the best validation step (export);
<workdir>/summary.json best reward and step, last validation, speed.
Each manager keeps one step. In a multi-process job every process saves
and restores (orbax writes each process's array shards, grain each
process's iterator position) into one directory that all of them see;
summary.json is process 0's.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from kvp_jax import _files
from kvp_jax import distributed
from kvp_jax.training import _per_agent

LATEST_DIR = "checkpoints"
BEST_DIR = "best"
SUMMARY_FILE = "summary.json"


def _manager(directory: Path) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      directory.absolute(),
      options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))


class Checkpoints:
  """The latest and best checkpoints of a run (state + iterator position).

  A context manager: closing waits for and releases both managers.
  """

  def __init__(self, workdir: str | Path):
    self.workdir = Path(workdir)
    self.latest = _manager(self.workdir / LATEST_DIR)
    self.best = _manager(self.workdir / BEST_DIR)

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def restore_latest(self, state, state_sharding, iterator):
    """The latest checkpoint's state (placed as `state_sharding`), the
    iterator moved to its saved position; `state` itself without one."""
    step = self.latest.latest_step()
    if step is None:
      return state
    template = jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        state, state_sharding)
    restored = self.latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(template),
        data=grain.checkpoint.CheckpointRestore(iterator)))
    return restored.state

  def _save(self, manager, state, iterator, metrics=None) -> None:
    manager.save(int(state.step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(iterator)), metrics=metrics)
    manager.wait_until_finished()

  def save_latest(self, state, iterator) -> None:
    self._save(self.latest, state, iterator)

  def save_best(self, state, iterator, reward: float) -> None:
    self._save(self.best, state, iterator,
               metrics={"validation_reward": reward})

  def close(self) -> None:
    self.latest.close()
    self.best.close()

  def __enter__(self) -> "Checkpoints":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_summary(workdir: str | Path) -> dict[str, Any]:
  """The run's summary so far (a fresh one without summary.json)."""
  path = Path(workdir) / SUMMARY_FILE
  if path.exists():
    return json.loads(path.read_text())
  return {"best_reward": None, "best_step": None}


def write_summary(workdir: str | Path, summary: dict[str, Any]) -> None:
  """Writes summary.json (process 0 only in a multi-process job)."""
  if not distributed.is_primary():
    return
  _files.atomic_write_json(Path(workdir) / SUMMARY_FILE, summary, indent=2,
                           default=float)


def describe_summary(summary: dict[str, Any]) -> str:
  """One line on a run's best validation, also before the first one."""
  if summary.get("best_reward") is None:
    return "no validation yet (the run stopped before its first one)"
  return (f"best validation reward {summary['best_reward']:.4f} at step "
          f"{summary['best_step']}")


def restore_params(workdir: str | Path, *, which: str = "best",
                   ema: bool = True):
  """The agents' params of a run (numpy arrays with a leading [A] axis).

  Args:
    workdir: the training run's directory.
    which: "best" (the step of the best mean validation reward), "latest",
      or "best_per_agent" (each agent's own best step; EMA weights only;
      runs trained with train.best_per_agent).
    ema: the EMA weights (what the method evaluates) or the raw ones.
  Returns:
    (params, step); for best_per_agent, the step it was last updated at.
  Raises:
    FileNotFoundError naming the directory when there is no checkpoint.
  """
  if which == "best_per_agent":
    if not ema:
      raise ValueError("best_per_agent keeps only the EMA weights")
    return _per_agent.restore_per_agent_params(workdir)
  if which not in ("best", "latest"):
    raise ValueError(f"which must be 'best', 'latest' or 'best_per_agent', "
                     f"got {which!r}")
  directory = Path(workdir).absolute() / (
      BEST_DIR if which == "best" else LATEST_DIR)
  return _restore_params_here(directory, which, ema)


@contextlib.contextmanager
def _no_orbax_warnings():
  """Keeps orbax's (absl) warnings off the console for a block."""
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def _restore_params_here(directory: Path, which: str, ema: bool):
  """`restore_params` by this process alone (also within a multi-process
  job, where the export runs on process 0): orbax synchronises only this
  process, and the arrays come back as numpy, so a checkpoint saved on
  other devices (another mesh, several processes) restores anywhere."""
  alone = ocp.options.MultiprocessingOptions(
      primary_host=jax.process_index(),
      active_processes={jax.process_index()},
      barrier_sync_key_prefix=f"restore_{jax.process_index()}")
  if not directory.is_dir():
    raise FileNotFoundError(f"no {which} checkpoint under {directory}")
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      create=False, multiprocessing_options=alone)) as manager:
    step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"no {which} checkpoint under {directory}")
  path = directory / str(step) / "state"
  with ocp.Checkpointer(
      ocp.PyTreeCheckpointHandler(multiprocessing_options=alone),
      multiprocessing_options=alone) as ckptr, _no_orbax_warnings():
    # Reading the item directory directly: orbax warns that it has no
    # step-level metadata file, which is expected here.
    meta = ckptr.metadata(path)
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    args = jax.tree_util.tree_map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    state = ckptr.restore(path, restore_args=args)
  return state["ema_params" if ema else "params"], step
