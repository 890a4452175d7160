"""Positions and ages past what training ranked never read an untrained
embedding row; the export records that range from the trace store."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import policy as policy_lib
from kvp_jax import training

BASE = dict(hidden=8, feature_width=8, position_dim=4, max_position=64,
            position_mode="both", dtype="float32")


def _poisoned(config, rows_from_position, rows_from_age):
  """Params whose embedding rows past the trained range are NaN (what an
  untrained row would leak, made visible)."""
  params = policy_lib.init_agents(config, 1, 8, jax.random.key(0))
  agent = dict(params["agents"])
  pos = np.array(agent["position_embed"]["embedding"])
  age = np.array(agent["age_embed"]["embedding"])
  pos[:, rows_from_position:] = np.nan
  age[:, rows_from_age:] = np.nan
  agent["position_embed"] = {"embedding": jnp.asarray(pos)}
  agent["age_embed"] = {"embedding": jnp.asarray(age)}
  return {"agents": agent}


def _score(config, params, positions, context):
  t = positions.shape[-1]
  rng = np.random.default_rng(0)
  kv = jnp.asarray(rng.normal(size=(1, 1, t, 8)), jnp.float32)
  pos = jnp.asarray(positions, jnp.int32)[None, None]
  return np.asarray(policy_lib.apply_agents(
      config, params, kv, kv, pos, jnp.ones_like(pos, bool),
      jnp.asarray([[context]], jnp.int32)))[0, 0]


def test_untrained_rows_are_never_read():
  trained = policy_lib.AgentConfig(**BASE, trained_max_position=20,
                                   trained_max_age=30)
  params = _poisoned(trained, 21, 31)
  positions = np.arange(60)
  scores = _score(trained, params, positions, context=60)
  assert np.all(np.isfinite(scores))
  # Without the recorded range the same params read the NaN rows.
  old = policy_lib.AgentConfig(**BASE)
  assert np.isnan(_score(old, params, positions, context=60)).any()


def test_clamped_scores_equal_the_last_trained_row():
  config = policy_lib.AgentConfig(**dict(BASE, position_mode="absolute"),
                                  trained_max_position=20)
  params = policy_lib.init_agents(config, 1, 8, jax.random.key(1))
  t = 40
  kv = jnp.ones((1, 1, t, 8), jnp.float32)
  pos = jnp.arange(t, dtype=jnp.int32)[None, None]
  valid = jnp.ones_like(pos, bool)
  ctx = jnp.asarray([[t]], jnp.int32)
  scores = np.asarray(policy_lib.apply_agents(config, params, kv, kv, pos,
                                              valid, ctx))[0, 0]
  np.testing.assert_allclose(scores[21:], scores[20], rtol=1e-6)
  assert not np.allclose(scores[:20], scores[20])
  # An old config (no range) keeps today's behaviour: rows up to 63 differ.
  old = config.replace(trained_max_position=None)
  scores = np.asarray(policy_lib.apply_agents(old, params, kv, kv, pos, valid,
                                              ctx))[0, 0]
  assert not np.allclose(scores[21:], scores[20])


def _artifact(config, params):
  return policy_lib.PolicyArtifact(
      agent_config=config, params=params, model_name="tiny",
      model_fingerprint="f", num_layers=1, num_kv_heads=1, head_dim=8,
      layer_start=0, layer_stop=1, info={})


def test_trimming_the_unread_rows_changes_no_score(tmp_path):
  config = policy_lib.AgentConfig(**BASE, trained_max_position=20,
                                  trained_max_age=30)
  params = policy_lib.init_agents(config, 1, 8, jax.random.key(2))
  trimmed = policy_lib.trim_position_rows(_artifact(config, params))
  assert trimmed.agent_config.max_position == 31
  assert trimmed.params["agents"]["age_embed"]["embedding"].shape == (1, 31, 4)
  trimmed.check_params()
  positions = np.arange(60)            # Past both trained maxima.
  np.testing.assert_array_equal(
      _score(config, params, positions, 60),
      _score(trimmed.agent_config, trimmed.params, positions, 60))
  # Saved and loaded, it is smaller and scores the same.
  full = policy_lib.save_artifact(tmp_path / "full.kvp",
                                  _artifact(config, params))
  cut = policy_lib.save_artifact(tmp_path / "cut.kvp", trimmed)
  assert cut.stat().st_size < full.stat().st_size
  again = policy_lib.load_artifact(cut)
  np.testing.assert_array_equal(
      _score(again.agent_config, again.params, positions, 60),
      _score(config, params, positions, 60))
  # Without a recorded range nothing is dropped.
  old = _artifact(policy_lib.AgentConfig(**BASE), params)
  assert policy_lib.trim_position_rows(old) is old


def test_bad_range_is_an_error():
  with pytest.raises(ValueError, match="trained_max_age"):
    policy_lib.AgentConfig(trained_max_age=-1)


def test_export_records_the_trained_range(tmp_path):
  from tests.training import synthetic  # pylint: disable=g-import-not-at-top
  store = synthetic.make_store(tmp_path / "traces", num_traces=8)
  cfg = synthetic.tiny_config(tmp_path / "traces", steps=2, eval_every=2,
                              checkpoint_every=2)
  training.train_and_evaluate(cfg, tmp_path / "run", progress=False)
  art = policy_lib.load_artifact(training.export_policy(
      tmp_path / "run", tmp_path / "p.kvp"))
  from kvp_jax.traces import TraceStore  # pylint: disable=g-import-not-at-top
  store = TraceStore.open(tmp_path / "traces")
  # split_mode "true": each training record's first split point, within
  # the largest bucket.
  splits = [int(store.read(r.index, fields=("split_points",))
                ["split_points"][0]) for r in store.records_in("train")]
  longest = max(p for p in splits if p <= max(cfg.input.buckets))
  ac = art.agent_config
  assert ac.trained_max_position == longest - cfg.input.num_recent - 1
  assert ac.trained_max_age == longest - 1 - cfg.input.num_sinks
  # The artifact round-trips the range.
  again = policy_lib.AgentConfig.from_dict(ac.to_dict())
  assert again == ac
