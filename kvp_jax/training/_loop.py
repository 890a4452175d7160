"""train_and_evaluate(config, workdir): the whole training job.

Reads top-down: setup, input, model, policy and mesh, step, checkpoints
(resume order: this workdir's latest checkpoint, else scratch), then the loop
(train, log, validate, checkpoint).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from pathlib import Path
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

from kvp_jax import data as data_lib
from kvp_jax import model as model_lib
from kvp_jax import policy as policy_lib
from kvp_jax import traces as traces_lib
from kvp_jax.training import _features
from kvp_jax.training import _history
from kvp_jax.training import _mesh
from kvp_jax.training import _state
from kvp_jax.training import _step
from kvp_jax.training import _validation


class TrainingDiverged(RuntimeError):
  """A non-finite loss or parameter; names the step and the last good
  checkpoint."""


def store_path(config, workdir: Path) -> Path:
  return Path(config.traces.store) if config.traces.store else (
      workdir / "traces")


def policy_config(config) -> policy_lib.AgentConfig:
  return policy_lib.AgentConfig.from_dict(dict(config.policy))


def input_config(config, num_layers: int, train: bool = True
                 ) -> data_lib.InputConfig:
  c = dict(config.input)
  layers = c.pop("layers", None)
  c["layers"] = tuple(layers) if layers else (0, num_layers)
  c["buckets"] = tuple(c["buckets"])
  c["shard_index"], c["shard_count"] = jax.process_index(), jax.process_count()
  if not train:
    c["num_workers"] = 0
    c["split_mode"] = config.input.eval_split_mode
  c.pop("eval_split_mode", None)
  return data_lib.InputConfig(**c)


def _write_json(path: Path, obj: Any) -> None:
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, default=float))
  tmp.replace(path)


def agent_windows(store, layers: tuple[int, int]) -> tuple[int, ...]:
  """Per agent, the sliding window of its layer (0: global), from the store's
  layout, else from the model preset the store names (else all global)."""
  lay = store.layout
  per_layer = lay.layer_windows
  if per_layer is None:
    try:
      config = model_lib.get_config(store.metadata["model"]["name"])
      per_layer = [config.layer_window(i) or 0
                   for i in range(config.num_layers)]
    except ValueError:
      per_layer = [0] * lay.num_layers
  return tuple(int(per_layer[l] or 0) for l in range(*layers)
               for _ in range(lay.num_kv_heads))


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path,
                       progress: bool = True) -> dict[str, Any]:
  """Trains the agents of config on the traces of its store.

  Returns a summary: final step, best validation reward, and the last
  per-agent validation costs.
  """
  # --- setup -------------------------------------------------------------
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  tc = config.train
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    writer = SummaryWriter(str(workdir / "tensorboard"))
  except ImportError:
    writer = None

  # --- input -------------------------------------------------------------
  store = traces_lib.TraceStore.open(store_path(config, workdir))
  lay = store.layout
  in_cfg = input_config(config, lay.num_layers)
  eval_cfg = input_config(config, lay.num_layers, train=False)
  layers = in_cfg.layers
  num_agents = (layers[1] - layers[0]) * lay.num_kv_heads
  agent_names = [f"L{l}H{h}" for l in range(*layers)
                 for h in range(lay.num_kv_heads)]
  if in_cfg.features == "stored" and not lay.with_kv:
    raise ValueError(f"{store.path} holds no keys/values; set "
                     "--config.input.features=recomputed")

  if not store.records_in("validation"):
    raise ValueError(f"{store.path} has no validation traces: raise "
                     "traces.split_fractions[1] or record more samples")
  windows = agent_windows(store, layers)

  # --- model (recomputed features only) ---------------------------------
  feature_params = None
  if in_cfg.features == "recomputed":
    decoder = model_lib.load_model(config.model)
    if decoder.fingerprint != store.metadata["model"]["fingerprint"]:
      raise ValueError(
          f"the model of config.model (fingerprint {decoder.fingerprint}) is "
          f"not the one {store.path} was recorded with "
          f"({store.metadata['model']['fingerprint']})")
    features = functools.partial(_features.recomputed_features,
                                 config=decoder.config, layers=layers)
    feature_params = decoder.params
  else:
    features = _features.stored_features

  # --- policy, optimiser, mesh ------------------------------------------
  pcfg = policy_config(config)
  mesh = _mesh.make_mesh(num_agents, heads=int(tc.mesh_heads))
  optimizer = _state.make_optimizer(tc)
  params = policy_lib.init_agents(pcfg, num_agents, lay.head_dim,
                                  jax.random.key(tc.seed))
  state = _state.create_state(params, optimizer)
  state_sh = _mesh.agent_sharding(mesh, state)
  state = jax.device_put(state, state_sh)
  replicated = NamedSharding(mesh, P())

  def put(batch):
    return jax.device_put(batch, _mesh.batch_sharding(mesh, batch))

  if in_cfg.batch_size % mesh.shape[_mesh.DATA]:
    raise ValueError(f"input.batch_size={in_cfg.batch_size} is not a multiple "
                     f"of the mesh's data axis ({mesh.shape[_mesh.DATA]})")
  if feature_params is not None:
    feature_params = jax.device_put(feature_params, replicated)
  step_fn = jax.jit(
      functools.partial(_step.train_step, policy=pcfg, optimizer=optimizer,
                        features=features, num_samples=int(tc.num_samples),
                        ema_decay=float(tc.ema_decay),
                        ema_start=int(tc.ema_start), windows=windows),
      in_shardings=(state_sh, None, replicated, replicated),
      out_shardings=(state_sh, replicated), donate_argnums=(0,))

  # --- checkpoints -------------------------------------------------------
  dataset = data_lib.train_dataset(store, in_cfg)
  iterator = iter(dataset)
  latest = ocp.CheckpointManager(
      (workdir / "checkpoints").absolute(),
      options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))
  best = ocp.CheckpointManager(
      (workdir / "best").absolute(),
      options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))
  summary_path = workdir / "summary.json"
  summary = json.loads(summary_path.read_text()) if summary_path.exists() \
      else {"best_reward": None, "best_step": None}
  if latest.latest_step() is not None:
    restored = latest.restore(latest.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(jax.tree_util.tree_map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            state, state_sh)),
        data=grain.checkpoint.CheckpointRestore(iterator)))
    state = restored.state
    logging.info("resumed from step %d", int(state.step))

  def save(manager, metrics=None):
    manager.save(int(state.step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(iterator)), metrics=metrics)
    manager.wait_until_finished()

  def validate(params, with_baselines):
    return _validation.evaluate(
        params, data_lib.eval_batches(store, eval_cfg, "validation",
                                      tc.max_eval_batches),
        policy=pcfg, features=features, feature_params=feature_params,
        put=put, with_baselines=with_baselines, windows=windows)

  baselines_path = workdir / "validation_baselines.json"
  baselines = None
  if baselines_path.exists():
    baselines = {k: np.asarray(v) for k, v in
                 json.loads(baselines_path.read_text()).items()}

  # --- loop --------------------------------------------------------------
  start = int(state.step)
  stop = int(tc.steps) if tc.stop_after is None else min(int(tc.steps),
                                                         int(tc.stop_after))
  root_key = jax.random.key(tc.seed + 1)
  bar = tqdm(total=int(tc.steps), initial=start, desc="training",
             unit="step", disable=not progress)
  pending = None          # (step, metrics) not yet read back from the device.
  last_good = latest.latest_step()
  result = None
  t0 = time.time()

  def check(step, metrics):
    host = jax.device_get(metrics)
    if not bool(host["finite"]):
      where = (f"{workdir / 'checkpoints'} step {last_good}"
               if last_good is not None else "none (no checkpoint yet)")
      raise TrainingDiverged(
          f"non-finite loss or parameters at step {step}; last good "
          f"checkpoint: {where}")
    return host

  for step in range(start, stop):
    batch = put(next(iterator))
    state, metrics = step_fn(state, batch,
                             jax.random.fold_in(root_key, step),
                             feature_params)
    if pending is not None:
      host = check(*pending)
      if (pending[0] + 1) % tc.log_every == 0:
        bar.set_postfix(reward=f"{host['reward']:.3f}",
                        cost=f"{host['normalised_cost']:.3f}")
        if writer:
          for k, v in host.items():
            if np.ndim(v) == 0:
              writer.add_scalar(f"train/{k}", float(v), pending[0] + 1)
    pending = (step, metrics)
    bar.update(1)
    done = step + 1
    if done % tc.eval_every == 0 or done == tc.steps:
      check(*pending)
      if baselines is None:
        baselines = validate(state.ema_params, True)
        _write_json(baselines_path, {k: v.tolist()
                                     for k, v in baselines.items()})
      result = dict(baselines, **{
          k: v for k, v in validate(state.ema_params, False).items()})
      reward = -float(np.mean(result["policy"]))
      if writer:
        writer.add_scalar("validation/reward", reward, done)
        for name in ("policy",) + _validation.BASELINES:
          writer.add_scalar(f"validation/cost_{name}",
                            float(np.mean(result[name])), done)
      if summary["best_reward"] is None or reward > summary["best_reward"]:
        summary.update(best_reward=reward, best_step=done)
        save(best, metrics={"validation_reward": reward})
        _write_json(summary_path, summary)
      (workdir / "validation.md").write_text(
          f"step {done}, EMA params, mean normalised cost on "
          f"{store.path} (validation split; oracle = 1.000, lower is "
          f"better)\n\n" + validation_table(result, agent_names) + "\n")
      summary["last_validation"] = {k: v.tolist() for k, v in result.items()}
      _history.append_validation(workdir, done, {
          k: result[k] for k in ("policy",) + _validation.BASELINES})
      _history.plot_history(_history.read_history(workdir), agent_names,
                            workdir / _history.PLOT_FILE)
      summary["last_step"] = done
    if done % tc.checkpoint_every == 0 or done == stop:
      check(*pending)
      save(latest)
      last_good = done
      _write_json(summary_path, summary)
  if pending is not None:
    check(*pending)
  bar.close()
  if writer:
    writer.close()
  summary["steps_per_s"] = (stop - start) / max(time.time() - t0, 1e-9)
  summary["agents"] = agent_names
  _write_json(summary_path, summary)
  latest.close()
  best.close()
  return summary
