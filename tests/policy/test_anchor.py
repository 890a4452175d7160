"""One anchor set for KeyDiff and the key-contrast feature: the slots the
cache holds at eviction (the ring on a windowed layer), in training,
validation and inference."""

import jax
import jax.numpy as jnp
import numpy as np

from kvp_jax import objective
from kvp_jax import policy as policy_lib
from kvp_jax import scorers
from kvp_jax.training import _validation
from kvp_jax.training._step import agent_inputs

P, T, H, W = 40, 48, 8, 16      # Prompt, bucket, head dim, window.
SINKS, RECENT = 2, 3


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  pos = np.arange(T)
  keys = rng.normal(size=(2, 1, T, H)).astype(np.float32)     # [A, B, T, H]
  keys[:, :, :P - W] += 3.0       # Old tokens share a direction (shifts a).
  return {
      "keys": keys, "values": rng.normal(size=(2, 1, T, H)).astype(np.float32),
      "positions": np.where(pos < P, pos, -1)[None].astype(np.int32),
      "valid": ((pos >= SINKS) & (pos < P - RECENT))[None],
      "context_length": np.asarray([P], np.int32),
      "importance": rng.exponential(size=(1, 2, T)).astype(np.float32)
                    * (pos < P), "weight": np.ones(1, np.float32)}


def _features(batch, _):
  return jnp.asarray(batch["keys"]), jnp.asarray(batch["values"])


def test_held_is_the_ring_on_windowed_layers():
  batch = _batch()
  inputs = agent_inputs(batch, jnp.asarray(batch["keys"]), (0, W))
  held = np.asarray(inputs["held"])[:, 0]
  pos = np.arange(T)
  np.testing.assert_array_equal(held[0], pos < P)
  np.testing.assert_array_equal(held[1], (pos >= P - W) & (pos < P))
  assert not np.any(np.asarray(inputs["valid"]) & ~np.asarray(inputs["held"]))


def test_validation_keydiff_uses_the_inference_anchor():
  batch = _batch()
  config = policy_lib.AgentConfig(hidden=8, feature_width=8, position_dim=4,
                                  max_position=64, dtype="float32")
  params = policy_lib.init_agents(config, 2, H, jax.random.key(0))
  got = _validation.evaluate(params, [batch], policy=config,
                             features=_features, windows=(0, W))["keydiff"]
  # Reference: KeyDiff's anchor over exactly what a cache would hold.
  pos = np.arange(T)
  want = []
  for a, held in enumerate((pos < P, (pos >= P - W) & (pos < P))):
    k = batch["keys"][a, 0]
    unit = k / np.linalg.norm(k, axis=-1, keepdims=True)
    anchor = unit[held].mean(0)
    score = -(unit @ anchor) / np.linalg.norm(anchor)
    ranked = batch["valid"][0] & held
    order = objective.deterministic_order(jnp.asarray(score),
                                          jnp.asarray(ranked))
    want.append(float(objective.normalised_cost(
        order, jnp.asarray(batch["importance"][0, a]), jnp.asarray(ranked))))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_contrast_agent_scores_equal_in_training_and_inference():
  batch = _batch(1)
  config = policy_lib.AgentConfig(hidden=8, feature_width=8, position_dim=4,
                                  max_position=64, use_key_contrast=True,
                                  dtype="float32")
  params = policy_lib.init_agents(config, 2, H, jax.random.key(2))
  keys = jnp.asarray(batch["keys"])
  inputs = agent_inputs(batch, keys, (0, W))
  train = np.asarray(policy_lib.apply_agents(
      config, params, keys, jnp.asarray(batch["values"]),
      inputs["positions"], inputs["valid"], inputs["context_length"],
      inputs["held"]))                                            # [A, 1, T]
  # Inference: a cache holding the held slots only, one agent per layer.
  for a in range(2):
    held = np.asarray(inputs["held"])[a, 0]
    view = scorers.LayerView(
        keys=keys[a][:, None, held], values=jnp.asarray(
            batch["values"])[a][:, None, held],
        positions=jnp.asarray(np.arange(T)[held], jnp.int32)[None, None],
        context_length=jnp.asarray([P], jnp.int32), layer=a)
    kvp = scorers.KVPScorer(agent_config=config, params=params,
                            layer_start=0, layer_stop=2)
    infer = np.asarray(kvp.score(view, jax.random.key(0)))[0, 0]
    ranked = np.asarray(inputs["valid"])[a, 0][held]
    np.testing.assert_allclose(infer[ranked], train[a, 0][held][ranked],
                               rtol=1e-4, atol=1e-5)
