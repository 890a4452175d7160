"""Everything a training run needs, built and checked before it writes
anything: the store (checked against the config), the input configs, the
feature source, the agents' state on the mesh and the jitted step."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import optax
from jax.sharding import Mesh

from kvp_jax import data as data_lib
from kvp_jax import model as model_lib
from kvp_jax import policy as policy_lib
from kvp_jax import traces as traces_lib
from kvp_jax.training import _checks
from kvp_jax.training import _features
from kvp_jax.training import _mesh
from kvp_jax.training import _state
from kvp_jax.training import _step
from kvp_jax.training import _validation
from kvp_jax.training._config import TrainConfig


def store_path(config, workdir: Path) -> Path:
  return Path(config.traces.store) if config.traces.store else (
      Path(workdir) / "traces")


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


@dataclasses.dataclass
class Job:
  """A prepared training run.

  Attributes:
    store: the trace store.
    train_input, eval_input: the training and validation input configs.
    agent_names: per agent a = (layer - start) * K + head, "L{layer}H{head}".
    windows: per agent, its layer's sliding window (0: global).
    features: (batch, feature_params) -> keys, values [A, B, T, H].
    feature_params: what `features` reads besides the batch (replicated on
      the mesh), or None.
    policy: the agents' config.
    mesh: the (data, heads) device mesh.
    optimizer: the optax optimiser.
    state: the fresh TrainState (seeded), placed on the mesh.
    state_sharding: its sharding (agents over heads).
    step_fn: the jitted step (`_step.make_train_step`).
  """
  store: traces_lib.TraceStore
  train_input: data_lib.InputConfig
  eval_input: data_lib.InputConfig
  agent_names: list[str]
  windows: tuple[int, ...]
  features: Callable
  feature_params: Any
  policy: policy_lib.AgentConfig
  mesh: Mesh
  optimizer: optax.GradientTransformation
  state: _state.TrainState
  state_sharding: Any
  step_fn: Callable

  def put(self, batch: dict) -> dict:
    return _mesh.put_batch(self.mesh, batch)

  def train_iterator(self) -> Iterator[dict]:
    """The training batches' grain iterator (checkpointable)."""
    return iter(data_lib.train_dataset(self.store, self.train_input))

  def evaluate(self, params, with_baselines: bool, max_batches: int | None):
    """Per-agent costs on the validation split (`_validation.evaluate`)."""
    return _validation.evaluate(
        params, data_lib.eval_batches(self.store, self.eval_input,
                                      "validation", max_batches),
        policy=self.policy, features=self.features,
        feature_params=self.feature_params, put=self.put,
        with_baselines=with_baselines, windows=self.windows)


def _open_store(config, workdir: Path) -> traces_lib.TraceStore:
  """The config's trace store, with what training needs from it."""
  store = traces_lib.TraceStore.open(store_path(config, workdir))
  if config.input.features == "stored" and not store.layout.with_kv:
    raise ValueError(f"{store.path} holds no keys/values; set "
                     "--config.input.features=recomputed")
  if not store.records_in("validation"):
    raise ValueError(f"{store.path} has no validation traces: raise "
                     "traces.split_fractions[1] or record more samples")
  return store


def _feature_source(config, store, layers: tuple[int, int]
                    ) -> tuple[Callable, Any]:
  """(features, feature_params) of config.input.features, the store checked
  against the config's model and recording settings."""
  if config.input.features != "recomputed":
    _checks.check_store(config, store)
    return _features.stored_features, None
  decoder = model_lib.load_model(config.model)
  if decoder.fingerprint != store.metadata["model"]["fingerprint"]:
    raise ValueError(
        f"the model of config.model (fingerprint {decoder.fingerprint}) is "
        f"not the one {store.path} was recorded with "
        f"({store.metadata['model']['fingerprint']})")
  _checks.check_store(config, store, model={
      "name": decoder.config.name, "fingerprint": decoder.fingerprint,
      "compute_dtype": decoder.config.compute_dtype})
  features = functools.partial(_features.recomputed_features,
                               config=decoder.config, layers=layers)
  return features, decoder.params


def prepare(config, tc: TrainConfig, workdir: str | Path) -> Job:
  """Opens and checks the inputs and builds the run; writes nothing.

  Raises:
    StoreError / ValueError naming what does not fit.
  """
  store = _open_store(config, Path(workdir))
  lay = store.layout
  in_cfg = input_config(config, lay.num_layers)
  eval_cfg = input_config(config, lay.num_layers, train=False)
  layers = in_cfg.layers
  num_agents = (layers[1] - layers[0]) * lay.num_kv_heads
  windows = agent_windows(store, layers)
  features, feature_params = _feature_source(config, store, layers)
  pcfg = policy_config(config)
  mesh = _mesh.make_mesh(num_agents, heads=tc.mesh_heads)
  if in_cfg.batch_size % mesh.shape[_mesh.DATA]:
    raise ValueError(f"input.batch_size={in_cfg.batch_size} is not a multiple "
                     f"of the mesh's data axis ({mesh.shape[_mesh.DATA]})")
  optimizer = _state.make_optimizer(tc)
  params = policy_lib.init_agents(pcfg, num_agents, lay.head_dim,
                                  jax.random.key(tc.seed))
  state = _state.create_state(params, optimizer)
  state_sh = _mesh.agent_sharding(mesh, state)
  state = jax.device_put(state, state_sh)
  if feature_params is not None:
    feature_params = jax.device_put(feature_params, _mesh.replicated(mesh))
  step_fn = _step.make_train_step(
      mesh, state_sh, policy=pcfg, optimizer=optimizer, features=features,
      num_samples=tc.num_samples, ema_decay=tc.ema_decay,
      ema_start=tc.ema_start, windows=windows)
  names = [f"L{l}H{h}" for l in range(*layers)
           for h in range(lay.num_kv_heads)]
  return Job(store=store, train_input=in_cfg, eval_input=eval_cfg,
             agent_names=names, windows=windows, features=features,
             feature_params=feature_params, policy=pcfg, mesh=mesh,
             optimizer=optimizer, state=state, state_sharding=state_sh,
             step_fn=step_fn)
