"""train_and_evaluate(config, workdir): the whole training job.

Reads top-down: the typed train config, the prepared run (inputs checked,
nothing written yet: `_job.prepare`), the workdir claimed (config.json, or
a refusal to resume another config's run), checkpoints (resume from this
workdir's latest, else scratch), then the loop: train, log, validate,
checkpoint.

Several processes (kvp_jax.distributed) run the same loop over one global
mesh; every process saves and restores the checkpoints (orbax writes each
process's shards, grain each process's iterator state), and process 0
alone writes config.json, summary.json, the validation table, history and
plot, and TensorBoard logs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from kvp_jax import distributed
from kvp_jax.training import _checkpoints
from kvp_jax.training import _job
from kvp_jax.training import _mesh
from kvp_jax.training import _per_agent
from kvp_jax.training import _report
from kvp_jax.training import _rundir
from kvp_jax.training._config import TrainConfig


class TrainingDiverged(RuntimeError):
  """A non-finite loss or parameter; names the step and the last good
  checkpoint."""


def _tensorboard(workdir: Path):
  if not distributed.is_primary():
    return None
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return SummaryWriter(str(workdir / "tensorboard"))


class _Loop:
  """The training loop over one prepared run; one step in flight (its
  metrics are read back while the next step runs)."""

  def __init__(self, job: _job.Job, tc: TrainConfig, workdir: Path,
               checkpoints: _checkpoints.Checkpoints, iterator,
               validator: _report.Validator, writer, summary: dict):
    self.job, self.tc, self.workdir = job, tc, workdir
    self.checkpoints, self.iterator = checkpoints, iterator
    self.validator, self.writer, self.summary = validator, writer, summary
    self.state = checkpoints.restore_latest(job.state, job.state_sharding,
                                            iterator)
    if checkpoints.latest_step() is not None:
      logging.info("resumed from step %d", int(self.state.step))
    self.last_good = checkpoints.latest_step()
    self.per_agent = (_per_agent.PerAgentBest(workdir) if tc.best_per_agent
                      else None)

  def check(self, step: int, metrics) -> dict:
    """The metrics on the host; TrainingDiverged if they are not finite."""
    host = jax.device_get(metrics)
    if not bool(host["finite"]):
      where = (f"{self.workdir / _checkpoints.LATEST_DIR} step "
               f"{self.last_good}" if self.last_good is not None
               else "none (no checkpoint yet)")
      raise TrainingDiverged(
          f"non-finite loss or parameters at step {step}; last good "
          f"checkpoint: {where}")
    return host

  def log(self, done: int, host: dict, bar) -> None:
    bar.set_postfix(reward=f"{host['reward']:.3f}",
                    cost=f"{host['normalised_cost']:.3f}")
    if self.writer:
      for k, v in host.items():
        if np.ndim(v) == 0:
          self.writer.add_scalar(f"train/{k}", float(v), done)

  def validate(self, done: int) -> None:
    """Validates the EMA params; a new best is saved as the best checkpoint."""
    result, reward = self.validator.validate_and_report(
        done, self.state.ema_params)
    best = self.summary["best_reward"]
    self.summary["last_validation"] = {k: v.tolist()
                                       for k, v in result.items()}
    if self.per_agent is not None:
      ema = self.state.ema_params
      if jax.process_count() > 1:
        ema = distributed.to_host(ema)      # Spans the processes' devices.
      self.per_agent.update(done, ema, result["policy"], self.summary)
    if best is None or reward > best:
      self.summary.update(best_reward=reward, best_step=done)
      self.checkpoints.save_best(self.state, self.iterator, reward)
      _checkpoints.write_summary(self.workdir, self.summary)
    self.summary["last_step"] = done

  def checkpoint(self, done: int) -> None:
    self.checkpoints.save_latest(self.state, self.iterator)
    self.last_good = done
    _checkpoints.write_summary(self.workdir, self.summary)

  def run(self, progress: bool) -> tuple[int, int]:
    """Trains to tc.last_step; returns the (first, stop) steps run."""
    tc, job = self.tc, self.job
    start, stop = int(self.state.step), tc.last_step
    root_key = jax.random.key(tc.seed + 1)
    step_key = lambda step: jax.random.fold_in(root_key, step)
    if jax.process_count() > 1:   # Made on the mesh: no step moves it there.
      step_key = jax.jit(lambda step: jax.random.fold_in(
          jax.random.key(tc.seed + 1), step),
                         out_shardings=_mesh.replicated(job.mesh))
    bar = tqdm(total=tc.steps, initial=start, desc="training", unit="step",
               disable=not progress)
    pending = None          # (step, metrics) not yet read back from the device.
    for step in range(start, stop):
      batch = job.put(next(self.iterator))
      self.state, metrics = job.step_fn(
          self.state, batch, step_key(step), job.feature_params)
      if pending is not None:
        host = self.check(*pending)
        if (pending[0] + 1) % tc.log_every == 0:
          self.log(pending[0] + 1, host, bar)
      pending = (step, metrics)
      bar.update(1)
      done = step + 1
      if done % tc.eval_every == 0 or done == tc.steps:
        self.check(*pending)
        self.validate(done)
      if done % tc.checkpoint_every == 0 or done == stop:
        self.check(*pending)
        self.checkpoint(done)
    if pending is not None:
      self.check(*pending)
    bar.close()
    if self.per_agent is not None:
      self.per_agent.close()
    return start, stop


# A run directory whose config.json predates one of these fields was made
# with this value (the config test checks each is still a config field).
ADDED_FIELD_DEFAULTS = {"traces.target": "attention"}


def _claim_workdir(config, workdir: Path) -> None:
  """`_rundir.claim_workdir` on process 0; the others check the workdir's
  config.json too (so that every process stops on a mismatch)."""
  defaults = {f"train.{k}": v
              for k, v in dataclasses.asdict(TrainConfig()).items()}
  # Fields added to other sections since a run began: their old meaning.
  defaults.update(ADDED_FIELD_DEFAULTS)
  if distributed.is_primary():
    _rundir.claim_workdir(config, workdir, defaults=defaults)
    return
  path = workdir / _rundir.CONFIG_FILE
  if path.is_file():
    diffs = _rundir.config_differences(
        json.loads(path.read_text()),
        json.loads(config.to_json_best_effort()), defaults)
    if diffs:
      raise _rundir.ConfigMismatch(
          f"{workdir} holds a run of another config; refusing to resume it "
          f"(use another --workdir): " + "; ".join(diffs))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path,
                       progress: bool = True) -> dict[str, Any]:
  """Trains the agents of config on the traces of its store.

  Nothing is written before the config and the store have been checked.

  Returns:
    A summary: best validation reward and step (None before the first
    validation), the last per-agent validation costs, speed, agent names.
  Raises:
    ValueError (a bad config field, a store or workdir that does not fit
    the config; StoreError and ConfigMismatch are ValueErrors),
    TrainingDiverged.
  """
  workdir = Path(workdir)
  tc = TrainConfig.from_config(config)
  job = _job.prepare(config, tc, workdir)
  _claim_workdir(config, workdir)
  writer = _tensorboard(workdir)
  iterator = job.train_iterator()
  with _checkpoints.Checkpoints(workdir) as checkpoints:
    summary = _checkpoints.read_summary(workdir)
    validator = _report.Validator(
        workdir, lambda p, b: job.evaluate(p, b, tc.max_eval_batches),
        job.agent_names, job.store.path, writer)
    loop = _Loop(job, tc, workdir, checkpoints, iterator, validator, writer,
                 summary)
    t0 = time.time()
    start, stop = loop.run(progress)
    if writer:
      writer.close()
    summary["steps_per_s"] = (stop - start) / max(time.time() - t0, 1e-9)
    summary["agents"] = job.agent_names
    _checkpoints.write_summary(workdir, summary)
  return summary
