"""The trainer on synthetic traces: it learns, it resumes exactly, it stops
on NaN, and its step is the same sharded over 4 devices."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from kvp_jax import training
from tests.training import synthetic


def test_training_reaches_the_oracle(tmp_path):
  synthetic.make_store(tmp_path / "traces")
  summary = training.train_and_evaluate(
      synthetic.tiny_config(tmp_path / "traces", steps=300, eval_every=100,
                            checkpoint_every=100), tmp_path / "run",
      progress=False)
  val = {k: np.asarray(v) for k, v in summary["last_validation"].items()}
  assert np.all(val["policy"] < 1.05), val["policy"]
  for name in training.BASELINES:
    assert np.all(val["policy"] < val[name]), (name, val)
  assert np.all(val["random"] > 1.3)
  table = (tmp_path / "run" / "validation.md").read_text()
  assert "L0H0" in table and "L1H0" in table
  history = training.read_history(tmp_path / "run")
  assert [r["step"] for r in history] == [100, 200, 300]
  assert history[-1]["costs"]["policy"] == summary["last_validation"]["policy"]
  assert (tmp_path / "run" / "validation.png").stat().st_size > 10_000
  params, step = training.restore_params(tmp_path / "run", which="best")
  assert step == summary["best_step"]
  assert jax.tree_util.tree_leaves(params)[0].shape[0] == 2


def test_the_reward_weighting_reaches_the_step(tmp_path):
  """train.reward_budgets changes the gradients (a cut at budget 4 of ~100
  ranked tokens), and the validation still reports the paper's cost."""
  synthetic.make_store(tmp_path / "traces", num_traces=16)
  params = {}
  for kind in ("uniform", "truncated"):
    config = synthetic.tiny_config(tmp_path / "traces", steps=6, eval_every=6,
                                   checkpoint_every=6, reward_budgets=kind,
                                   reward_max_budget=4)
    summary = training.train_and_evaluate(config, tmp_path / kind,
                                          progress=False)
    assert np.all(np.asarray(summary["last_validation"]["policy"]) >= 1.0)
    params[kind], _ = training.restore_params(tmp_path / kind, which="latest",
                                             ema=False)
  diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
             for a, b in zip(jax.tree_util.tree_leaves(params["uniform"]),
                             jax.tree_util.tree_leaves(params["truncated"])))
  assert diff > 1e-6


def test_killed_and_resumed_run_ends_with_the_same_params(tmp_path):
  synthetic.make_store(tmp_path / "traces", num_traces=32)
  cfg = lambda **kw: synthetic.tiny_config(
      tmp_path / "traces", steps=30, eval_every=10, checkpoint_every=10, **kw)
  training.train_and_evaluate(cfg(), tmp_path / "whole", progress=False)
  training.train_and_evaluate(cfg(stop_after=20), tmp_path / "part",
                              progress=False)
  _, step = training.restore_params(tmp_path / "part", which="latest")
  assert step == 20
  training.train_and_evaluate(cfg(), tmp_path / "part", progress=False)
  # The resumed run validated again where it restarted: one record a step.
  assert [r["step"] for r in training.read_history(tmp_path / "part")] == [
      10, 20, 30]
  for ema in (True, False):
    a, sa = training.restore_params(tmp_path / "whole", which="latest",
                                    ema=ema)
    b, sb = training.restore_params(tmp_path / "part", which="latest",
                                    ema=ema)
    assert sa == sb == 30
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_nan_stops_the_job_and_names_the_step(tmp_path):
  synthetic.make_store(tmp_path / "traces", num_traces=8, nan_at=1)
  cfg = synthetic.tiny_config(tmp_path / "traces", steps=20)
  cfg.input.batch_size = 6          # Every batch holds the poisoned trace.
  with pytest.raises(training.TrainingDiverged,
                     match=r"non-finite .* at step \d+; last good checkpoint: "
                           r"none"):
    training.train_and_evaluate(cfg, tmp_path / "run", progress=False)


SHARDED_SCRIPT = r"""
import functools, json, sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from kvp_jax import data as data_lib, policy as policy_lib, traces, training
from tests.training import synthetic

assert jax.device_count() == 4, jax.devices()
store = traces.TraceStore.open(sys.argv[1])
cfg = synthetic.tiny_config(sys.argv[1])
pcfg = training.policy_config(cfg)
# SGD after the per-agent clip: the update is the gradient itself, so the
# comparison measures the step's maths (Adam's first steps would turn
# rounding noise in near-zero gradients into full-size updates).
import optax
opt = optax.chain(training.clip_per_agent(5.0), optax.sgd(0.1))
batch = next(iter(data_lib.train_dataset(store, data_lib.InputConfig(
    batch_size=8, buckets=(128,)))))
params = policy_lib.init_agents(pcfg, 2, 8, jax.random.key(0))
step = functools.partial(training.train_step, policy=pcfg, optimizer=opt,
                         features=training.stored_features, num_samples=1,
                         ema_decay=0.9, ema_start=0)
key = jax.random.key(3)
results = {}
for heads in (1, 2):
  mesh = training.make_mesh(2, heads=heads)
  state = training.create_state(params, opt)
  sh = training.agent_sharding(mesh, state)
  state = jax.device_put(state, sh)
  b = jax.device_put(batch, training.batch_sharding(mesh, batch))
  fn = jax.jit(step, in_shardings=(sh, None, NamedSharding(mesh, P())),
               out_shardings=(sh, NamedSharding(mesh, P())))
  for _ in range(3):
    state, metrics = fn(state, b, key)
  leaf = jax.tree_util.tree_leaves(state.params)[0]
  assert len(leaf.sharding.device_set) == 4
  results[heads] = [np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)]
single = jax.jit(step)
state = training.create_state(params, opt)
for _ in range(3):
  state, _ = single(jax.device_put(state, jax.devices()[0]),
                    jax.device_put(batch, jax.devices()[0]), key)
one = [np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)]
for heads, got in results.items():
  err = max(float(np.max(np.abs(a - b))) for a, b in zip(one, got))
  moved = max(float(np.max(np.abs(a - b))) for a, b in zip(
      one, jax.tree_util.tree_leaves(params)))
  print(json.dumps({"heads": heads, "max_abs_diff": err, "moved": moved}))
  assert err < 1e-5 and moved > 1e3 * err, (heads, err, moved)
"""


def test_sharded_step_matches_single_device(tmp_path):
  synthetic.make_store(tmp_path / "traces", num_traces=16)
  env = dict(os.environ,
             XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT,
                         str(tmp_path / "traces")], env=env,
                        capture_output=True, text=True, timeout=600,
                        cwd=os.path.dirname(os.path.dirname(
                            os.path.dirname(__file__))))
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
  assert [l["heads"] for l in lines] == [1, 2]


def test_windowed_agents_rank_only_their_window():
  from kvp_jax.training import _step
  b, t = 2, 40
  batch = {"positions": np.tile(np.arange(t, dtype=np.int32), (b, 1)),
           "valid": np.ones((b, t), bool),
           "context_length": np.asarray([40, 30], np.int32),
           "importance": np.ones((b, 2, t), np.float32)}
  keys = np.zeros((2, b, t, 4), np.float32)
  inputs = _step.agent_inputs(batch, keys, windows=(8, 0))
  valid = np.asarray(inputs["valid"])
  # Agent 0 (window 8) ranks only the 8 newest tokens of each row's context.
  assert np.flatnonzero(valid[0, 0]).tolist() == list(range(32, 40))
  assert np.flatnonzero(valid[0, 1]).tolist() == list(range(22, 40))
  # Agent 1 (global) ranks everything the batch marks valid.
  assert valid[1].all()
