"""Position features that mean the same at every context length: the depth
bucket and the log-scaled age bucket, against numpy references, and what
they do past the trained range."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import policy as policy_lib

BASE = dict(hidden=8, feature_width=8, position_dim=4, max_position=64,
            dtype="float32", use_keys=False, use_values=False)


def test_depth_buckets_are_the_numpy_reference_at_every_length():
  for length in (1000, 2048, 32768):
    pos = np.arange(length)
    got = np.asarray(policy_lib.depth_bucket(
        jnp.asarray(pos[None], jnp.int32), jnp.asarray([length]), 64))[0]
    np.testing.assert_array_equal(got, (pos * 64) // length)
    # Each bucket holds an equal share of the context, whatever its length.
    counts = np.bincount(got, minlength=64)
    assert counts.min() >= length // 64 and counts.max() <= -(-length // 64)


def test_log_age_buckets_are_the_numpy_reference():
  ages = np.arange(0, 300_000, 7)
  exact = policy_lib.LOG_AGE_STEPS * np.log2(1.0 + ages)
  away = np.abs(exact - np.round(exact)) > 1e-4      # Off the boundaries.
  got = np.asarray(policy_lib.log_age_bucket(jnp.asarray(ages, jnp.int32)))
  np.testing.assert_array_equal(got[away], np.floor(exact[away]))
  # Powers of two minus one fall on a boundary exactly: age 2^k - 1 -> 4k.
  powers = np.asarray([2 ** k - 1 for k in range(16)], np.int32)
  np.testing.assert_array_equal(
      policy_lib.log_age_bucket(jnp.asarray(powers)), 4 * np.arange(16))
  assert int(policy_lib.log_age_bucket(jnp.asarray(-5))) == 0
  assert int(policy_lib.log_age_bucket(jnp.asarray(2 ** 30))) == (
      policy_lib.LOG_AGE_ROWS - 1)


def _scores(config, params, positions, context):
  t = positions.shape[-1]
  kv = jnp.ones((1, 1, t, 8), jnp.float32)   # Identical tokens: only the
  pos = jnp.asarray(positions, jnp.int32)[None, None]  # position differs.
  return np.asarray(policy_lib.apply_agents(
      config, params, kv, kv, pos, jnp.ones_like(pos, bool),
      jnp.asarray([[context]], jnp.int32)))[0, 0]


def test_depth_scores_a_token_by_its_share_of_the_context():
  """A token at the same depth of a 2k and of a 32k context gets the same
  score: nothing in the feature depends on the length."""
  config = policy_lib.AgentConfig(**BASE, position_mode="depth",
                                  trained_max_position=2000,
                                  trained_max_age=2000)
  params = policy_lib.init_agents(config, 1, 8, jax.random.key(0))
  short = _scores(config, params, np.arange(0, 2048, 32), 2048)
  long = _scores(config, params, np.arange(0, 32768, 512), 32768)
  np.testing.assert_array_equal(short, long)
  assert len(np.unique(short)) > 32      # 64 buckets, (nearly) all distinct.


def test_log_age_past_the_trained_range_reads_the_last_trained_bucket():
  trained_age = 2000                      # Bucket floor(4 log2 2001) = 43.
  top = int(policy_lib.log_age_bucket(jnp.asarray(trained_age)))
  assert top == 43
  config = policy_lib.AgentConfig(**BASE, position_mode="log_age",
                                  trained_max_position=trained_age,
                                  trained_max_age=trained_age)
  params = policy_lib.init_agents(config, 1, 8, jax.random.key(1))
  table = np.array(params["agents"]["log_age_embed"]["embedding"])
  table[:, top + 1:] = np.nan            # What untrained rows would leak.
  params = {"agents": {**params["agents"],
                       "log_age_embed": {"embedding": jnp.asarray(table)}}}
  context = 32768
  positions = np.arange(0, context, 97)
  scores = _scores(config, params, positions, context)
  assert np.all(np.isfinite(scores))
  ages = context - 1 - positions
  old = ages > trained_age
  np.testing.assert_array_equal(scores[old], scores[old][0])
  # Younger tokens keep their buckets: ages 0..2000 span 44 buckets.
  assert len(np.unique(scores[~old])) == len(np.unique(
      np.asarray(policy_lib.log_age_bucket(jnp.asarray(ages[~old])))))


def test_trimming_leaves_the_length_free_tables(tmp_path):
  config = policy_lib.AgentConfig(**BASE, position_mode="depth_log_age",
                                  trained_max_position=100,
                                  trained_max_age=100)
  params = policy_lib.init_agents(config, 1, 8, jax.random.key(2))
  artifact = policy_lib.PolicyArtifact(
      agent_config=config, params=params, model_name="tiny",
      model_fingerprint="f", num_layers=1, num_kv_heads=1, head_dim=8,
      layer_start=0, layer_stop=1, info={})
  trimmed = policy_lib.trim_position_rows(artifact)
  path = policy_lib.save_artifact(tmp_path / "p.kvp", trimmed)
  loaded = policy_lib.load_artifact(path)
  positions = np.arange(0, 4096, 13)
  np.testing.assert_array_equal(
      _scores(loaded.agent_config, loaded.params, positions, 4096),
      _scores(config, params, positions, 4096))


def test_an_unknown_mode_or_bucket_count_is_refused():
  with pytest.raises(ValueError, match="position_mode"):
    policy_lib.AgentConfig(position_mode="rope")
  with pytest.raises(ValueError, match="num_depth_buckets"):
    policy_lib.AgentConfig(position_mode="depth", num_depth_buckets=0)
