"""Everything a training run needs, built and checked before it writes
anything: the store (checked against the config), the input configs, the
feature source, the agents' state on the mesh and the jitted step.

Several processes (kvp_jax.distributed): the mesh spans every process's
devices (ordered by process, so that each process holds whole rows of the
data axis); every process plans the same global batches and reads only its
rows of each (`process_rows`), which `distributed.host_local_to_global`
assembles into global arrays. A batch therefore holds the same traces
whatever the number of processes, and so do the steps. Validation batches
are split the same way; their sums are reduced over the processes by the
jitted computation itself.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Iterator

import grain
import jax
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from kvp_jax import distributed

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
  # Every process plans the global batches; each reads its rows of them
  # (`Job.rows`), not a shard of the elements.
  c["shard_index"], c["shard_count"] = 0, 1
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
    rows: the rows of every batch that this process reads (all of them for
      one process).
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
  rows: range

  @property
  def multi_process(self) -> bool:
    return jax.process_count() > 1

  def put(self, batch: dict) -> dict:
    """This process's rows of a batch, as global arrays on the mesh."""
    if not self.multi_process:
      return _mesh.put_batch(self.mesh, batch)
    return distributed.host_local_to_global(
        batch, _mesh.batch_sharding(self.mesh, batch))

  def train_iterator(self) -> Iterator[dict]:
    """The training batches' grain iterator (checkpointable); this
    process's rows of each."""
    if not self.multi_process:
      return iter(data_lib.train_dataset(self.store, self.train_input))
    return iter(train_rows_dataset(self.store, self.train_input, self.rows))

  def evaluate(self, params, with_baselines: bool, max_batches: int | None):
    """Per-agent costs on the validation split (`_validation.evaluate`).

    Several processes: each reads its rows of every batch; the batch is
    split over `data` only and the params are replicated, so that the sums
    come back replicated (readable on every process)."""
    if not self.multi_process:
      return _validation.evaluate(
          params, data_lib.eval_batches(self.store, self.eval_input,
                                        "validation", max_batches),
          policy=self.policy, features=self.features,
          feature_params=self.feature_params, put=self.put,
          with_baselines=with_baselines, windows=self.windows)
    rows = NamedSharding(self.mesh, PartitionSpec(_mesh.DATA))
    return _validation.evaluate(
        jax.device_put(params, _mesh.replicated(self.mesh)),
        eval_rows_batches(self.store, self.eval_input, self.rows,
                          max_batches),
        policy=self.policy, features=self.features,
        feature_params=self.feature_params,
        put=lambda b: distributed.host_local_to_global(b, rows),
        with_baselines=with_baselines, windows=self.windows)


def _read_rows(reader: data_lib.ReadElement, rows: range):
  """A global batch of elements -> this process's rows, read and stacked."""
  return lambda batch: data_lib.stack(
      [reader.map(e) for e in batch[rows.start:rows.stop]])


def train_rows_dataset(store: traces_lib.TraceStore, cfg: data_lib.InputConfig,
                       rows: range) -> grain.IterDataset:
  """`data_lib.train_dataset`'s batches (the same elements in the same
  order), of which only `rows` are read: [len(rows), ...] arrays."""
  elems, _ = data_lib.elements(store, "train", cfg)
  if not elems:
    raise ValueError(f"{store.path}: no 'train' elements for split_mode="
                     f"{cfg.split_mode!r} and buckets {cfg.buckets}")
  per_bucket: dict[int, list] = {}
  for e in elems:
    per_bucket.setdefault(e.bucket, []).append(e)
  read = _read_rows(data_lib.ReadElement(store, cfg), rows)
  parts, weights = [], []
  for i, bucket in enumerate(sorted(per_bucket)):
    items = per_bucket[bucket]
    parts.append(grain.MapDataset.source(items).shuffle(seed=cfg.seed + i)
                 .repeat().batch(cfg.batch_size, drop_remainder=True,
                                 batch_fn=list).map(read))
    weights.append(len(items))
  return data_lib.mixed_iterator(parts, weights, cfg)


def eval_rows_batches(store: traces_lib.TraceStore, cfg: data_lib.InputConfig,
                      rows: range, max_batches: int | None = None,
                      split: str = "validation") -> Iterator[dict]:
  """`data_lib.eval_batches`' batches (padded, with `weight`), of which
  only `rows` are read."""
  elems, _ = data_lib.elements(store, split, cfg)
  read = _read_rows(data_lib.ReadElement(store, cfg), rows)
  for chunk, weight in data_lib.padded_eval_chunks(elems, cfg.batch_size,
                                                   max_batches):
    batch = read(chunk)
    batch["weight"] = weight[rows.start:rows.stop]
    yield batch


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
  mesh = make_process_mesh(num_agents, tc.mesh_heads)
  if in_cfg.batch_size % mesh.shape[_mesh.DATA]:
    raise ValueError(f"input.batch_size={in_cfg.batch_size} is not a multiple "
                     f"of the mesh's data axis ({mesh.shape[_mesh.DATA]})")
  rows = distributed.process_rows(
      NamedSharding(mesh, PartitionSpec(_mesh.DATA)), in_cfg.batch_size)
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
      ema_start=tc.ema_start, windows=windows,
      weighting=tc.budget_weighting, advantage_norm=tc.advantage_norm)
  names = [f"L{l}H{h}" for l in range(*layers)
           for h in range(lay.num_kv_heads)]
  return Job(store=store, train_input=in_cfg, eval_input=eval_cfg,
             agent_names=names, windows=windows, features=features,
             feature_params=feature_params, policy=pcfg, mesh=mesh,
             optimizer=optimizer, state=state, state_sharding=state_sh,
             step_fn=step_fn, rows=rows)


def make_process_mesh(num_agents: int, heads: int) -> Mesh:
  """`_mesh.make_mesh` over every process's devices, ordered by process
  (one process: jax.devices() as they are), so that the heads axis stays
  within a process and each process holds whole rows of the data axis.

  Raises:
    ValueError: heads does not divide this process's devices.
  """
  if jax.process_count() == 1:
    return _mesh.make_mesh(num_agents, heads=heads)
  if jax.local_device_count() % heads:
    raise ValueError(f"train.mesh_heads={heads} does not divide the "
                     f"{jax.local_device_count()} devices of a process: "
                     "agents are split over one process's devices")
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  return _mesh.make_mesh(num_agents, heads=heads, devices=devices)
