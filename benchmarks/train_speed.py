r"""Train step time, traces/s, and whether the step is input-bound.

  python benchmarks/train_speed.py               # 18 agents, 128 x 2k traces
  python benchmarks/train_speed.py --model=tiny --batch_size=4 --length=64 \
      --steps=3 --hidden=32 --feature_width=32 --dtype=float32   # smoke test

What is measured: the jitted train step of kvp_jax.train (all agents of
--layers, Plackett-Luce RLOO loss, AdamW + EMA, state donated, each agent's
layer window, sharded over a (data, heads) mesh of the local devices, built
by kvp_jax.training.make_train_step as the training loop builds it) on batches of --batch_size traces of
--length ranked tokens, fed two ways:

  memory    one batch, put on the device once and reused every step;
  pipeline  the real grain pipeline (kvp_jax.data.train_dataset) over a
            synthetic trace store, each batch put on the device per step.

The store is written first into a temporary directory (under --store_dir):
--num_traces traces of random keys/values (bfloat16), importance and tokens,
with the layout of --model (gemma3_270m: 18 layers, 1 KV head, head_dim 256),
each trace --length tokens with its prompt length = --length (one bucket).
The loop is the training loop's: fetch the next batch, put it on the device,
dispatch the step, then wait for the previous step's metrics (one step in
flight, so reading overlaps the device work). A step's time is the wall time
of one such iteration, after --warmup iterations (compilation); the median of
--steps is reported, with traces/s = batch / step time and, for the
pipeline, slowdown % = 100 x (pipeline step / memory step - 1).

Both feature sources are timed on the same data: "stored" (keys and values
read from the batch) and "recomputed" (kvp_jax.training.recomputed_features:
a capture forward of a random-weight decoder of --model's shape in
--model_dtype, its params a step argument; its batches carry no keys or
values).

Target (issue): on an H100, 18 agents, 128 traces of 2k tokens: <= 0.5 s a
step, and the real pipeline at most 10% slower than in-memory batches.
"""

import functools
import statistics
import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np

import _timing
from experiments import common
from kvp_jax import data as data_lib
from kvp_jax import model as model_lib
from kvp_jax import policy as policy_lib
from kvp_jax import traces as traces_lib
from kvp_jax import training

_MODEL = flags.DEFINE_string("model", "gemma3_270m",
                             "Model preset: store layout and recomputed "
                             "features' decoder.")
_MODEL_DTYPE = flags.DEFINE_enum("model_dtype", "float32",
                                 ["float32", "bfloat16"],
                                 "Dtype of the decoder that recomputes "
                                 "features (the experiments use float32).")
_LAYERS = flags.DEFINE_integer("layers", None,
                               "Train the agents of layers 0..N-1 "
                               "(default: all; agents = N x KV heads).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Traces per batch.")
_LENGTH = flags.DEFINE_integer("length", 2048, "Ranked tokens per trace.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per measurement.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed first steps.")
_NUM_TRACES = flags.DEFINE_integer("num_traces", None,
                                   "Traces in the store (default: batch).")
_FEATURES = flags.DEFINE_list("features", ["stored", "recomputed"],
                              "Feature sources to time.")
_HIDDEN = flags.DEFINE_integer("hidden", 256, "Agent MLP width.")
_FEATURE_WIDTH = flags.DEFINE_integer("feature_width", 256,
                                      "Agent key/value projection width.")
_POSITION_DIM = flags.DEFINE_integer("position_dim", 32,
                                     "Agent position embedding width.")
_POSITION_MODE = flags.DEFINE_enum("position_mode", "absolute",
                                   ["absolute", "relative", "both"],
                                   "Agent position features.")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"],
                           "Agent compute dtype.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 0,
                                    "grain worker processes.")
_PREFETCH = flags.DEFINE_integer("prefetch_batches", 2,
                                 "Batches read ahead.")
_STORE_DIR = flags.DEFINE_string("store_dir", None,
                                 "Directory for the temporary store.")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed.")
_OUT = flags.DEFINE_string("out", None, "Also write the JSON lines here.")


def _write_store(path, config, n: int, length: int):
  """n random traces with the model's layout, written 16 at a time (four
  random key/value arrays are reused; the tokens are all different)."""
  l, k, h = config.num_layers, config.num_kv_heads, config.head_dim
  layout = traces_lib.StoreLayout(
      num_layers=l, num_kv_heads=k, head_dim=h, max_length=length,
      num_splits=1, layer_windows=tuple(config.layer_window(i) or 0
                                        for i in range(l)))
  store = traces_lib.TraceStore.create_or_resume(
      path, {"model": {"name": config.name, "fingerprint": "synthetic"}},
      layout)
  rng = np.random.default_rng(_SEED.value)
  pool = [(rng.standard_normal((l, k, length, h), np.float32),
           rng.standard_normal((l, k, length, h), np.float32),
           rng.random((l, k, 1, length), np.float32)) for _ in range(4)]
  for start in range(0, n, 16):
    rows = range(start, min(start + 16, n))
    store.append(
        [traces_lib.Trace(
            tokens=rng.integers(3, config.vocab_size, length).astype(np.int32),
            prompt_length=length, split_points=np.asarray([length], np.int32),
            importance=pool[i % 4][2], keys=pool[i % 4][0],
            values=pool[i % 4][1]) for i in rows],
        [{"id": f"t{i}", "task": "synthetic", "split": "train"} for i in rows])
  return store


def _time_loop(step_fn, state, next_batch, root_key, feature_params) -> float:
  """Median iteration time of the training loop (see the docstring)."""
  times, pending = [], None
  for i in range(_WARMUP.value + _STEPS.value):
    start = time.perf_counter()
    state, metrics = step_fn(state, next_batch(),
                             jax.random.fold_in(root_key, i), feature_params)
    if pending is not None:
      jax.block_until_ready(pending)
    pending = metrics
    if i >= _WARMUP.value:
      times.append(time.perf_counter() - start)
    if i + 1 == _WARMUP.value:
      jax.block_until_ready((state, metrics))  # Start timing from idle.
  jax.block_until_ready((state, pending))
  return statistics.median(times)


def main(argv):
  del argv
  model_cfg = model_lib.get_config(_MODEL.value, param_dtype=_MODEL_DTYPE.value,
                                   compute_dtype=_MODEL_DTYPE.value)
  layers = (0, _LAYERS.value or model_cfg.num_layers)
  num_agents = (layers[1] - layers[0]) * model_cfg.num_kv_heads
  b, t = _BATCH_SIZE.value, _LENGTH.value
  pcfg = policy_lib.AgentConfig.from_dict(dict(common.policy_config(
      hidden=_HIDDEN.value, feature_width=_FEATURE_WIDTH.value,
      position_dim=_POSITION_DIM.value, position_mode=_POSITION_MODE.value,
      dtype=_DTYPE.value)))
  tc = training.TrainConfig.from_config({"train": common.train_config()})
  optimizer = training.make_optimizer(tc)
  mesh = training.make_mesh(num_agents)
  root_key = jax.random.key(_SEED.value)
  replicated = training.replicated(mesh)
  # As the training loop: (features fn, the frozen params it reads).
  feature_fns = {"stored": (training.stored_features, None)}
  if "recomputed" in _FEATURES.value:
    decoder = model_lib.random_model(model_cfg, seed=_SEED.value)
    feature_fns["recomputed"] = (
        functools.partial(training.recomputed_features, config=model_cfg,
                          layers=layers),
        jax.device_put(decoder.params, replicated))
  windows = tuple(model_cfg.layer_window(l) or 0 for l in range(*layers)
                  for _ in range(model_cfg.num_kv_heads))
  emitter = _timing.Emitter(_OUT.value)
  with tempfile.TemporaryDirectory(dir=_STORE_DIR.value) as tmp:
    start = time.perf_counter()
    store = _write_store(f"{tmp}/store", model_cfg, _NUM_TRACES.value or b, t)
    print(f"wrote {store.num_records} traces ({store.num_bytes() / 2**30:.2f}"
          f" GiB) in {time.perf_counter() - start:.1f} s", flush=True)
    for features in _FEATURES.value:
      in_cfg = data_lib.InputConfig(
          batch_size=b, buckets=(t,), layers=layers, features=features,
          seed=_SEED.value, num_workers=_NUM_WORKERS.value,
          prefetch_batches=_PREFETCH.value)
      iterator = iter(data_lib.train_dataset(store, in_cfg))
      host_batch = next(iterator)

      put = functools.partial(training.put_batch, mesh)
      memory_batch = put(host_batch)
      fresh = lambda: training.create_state(policy_lib.init_agents(
          pcfg, num_agents, model_cfg.head_dim,
          jax.random.fold_in(root_key, 1)), optimizer)
      state_sh = training.agent_sharding(mesh, fresh())
      features_fn, feature_params = feature_fns[features]
      step_fn = training.make_train_step(
          mesh, state_sh, policy=pcfg, optimizer=optimizer,
          features=features_fn, num_samples=tc.num_samples,
          ema_decay=tc.ema_decay, ema_start=tc.ema_start, windows=windows,
          weighting=tc.budget_weighting)
      result = {}
      for source, next_batch in (("memory", lambda: memory_batch),
                                 ("pipeline", lambda: put(next(iterator)))):
        sec = _time_loop(step_fn, jax.device_put(fresh(), state_sh),
                         next_batch, jax.random.fold_in(root_key, 2),
                         feature_params)
        result[source] = sec
        row = {"what": "train_step", "features": features, "input": source,
               "agents": num_agents, "batch": b, "length": t,
               "batch_mb": sum(x.nbytes for x in host_batch.values()) / 2**20,
               "step_seconds": sec, "traces_per_s": b / sec,
               "tokens_per_s": b * t / sec}
        if source == "pipeline":
          row["pipeline_slowdown_pct"] = 100 * (sec / result["memory"] - 1)
        emitter.emit(row)
  print(f"\n{model_cfg.name} layout, {num_agents} agents (hidden "
        f"{_HIDDEN.value}, {_DTYPE.value}), recomputed features in "
        f"{_MODEL_DTYPE.value}, on {_timing.device_line()}")
  print(_timing.table(
      ["features", "input", "batch x length", "MiB/batch", "s/step",
       "traces/s", "pipeline slowdown"],
      [[r["features"], r["input"], f"{r['batch']} x {r['length']}",
        f"{r['batch_mb']:,.1f}", f"{r['step_seconds']:.3f}",
        f"{r['traces_per_s']:,.1f}",
        f"{r['pipeline_slowdown_pct']:+.1f}%" if "pipeline_slowdown_pct" in r
        else ""] for r in emitter.rows]))


if __name__ == "__main__":
  app.run(main)
