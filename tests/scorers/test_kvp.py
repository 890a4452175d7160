"""The KVP scorer: the right agents score each layer, and it jits as a pytree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import policy as policy_lib
from kvp_jax import scorers
from tests.scorers import test_scorers as base


def _artifact(layers=(1, 3)):
  config = policy_lib.AgentConfig(hidden=16, feature_width=16, position_dim=4,
                                  max_position=64, dtype="float32",
                                  position_mode="both")
  a = (layers[1] - layers[0]) * base.K
  return policy_lib.PolicyArtifact(
      agent_config=config,
      params=policy_lib.init_agents(config, a, base.H, jax.random.key(1)),
      model_name="tiny", model_fingerprint="x", num_layers=3,
      num_kv_heads=base.K, head_dim=base.H, layer_start=layers[0],
      layer_stop=layers[1], info={})


def test_each_layer_uses_its_own_agents():
  art = _artifact()
  scorer = scorers.KVPScorer.from_artifact(art)
  for layer in (1, 2):
    view = base.make_view(3).replace(layer=layer)
    got = scorer.score(view)
    start = (layer - 1) * base.K
    params = policy_lib.agent_slice(art.params, start, start + base.K)
    sw = lambda x: jnp.swapaxes(x, 0, 1)
    want = sw(policy_lib.apply_agents(
        art.agent_config, params, sw(view.keys), sw(view.values),
        sw(view.positions), sw(view.valid),
        jnp.broadcast_to(view.context_length[None], (base.K, base.B))))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  a = scorer.score(base.make_view(3).replace(layer=1))
  b = scorer.score(base.make_view(3).replace(layer=2))
  assert not np.allclose(a, b)
  with pytest.raises(ValueError, match="no agents for layer 0"):
    scorer.score(base.make_view(3).replace(layer=0))


def test_scorer_is_a_pytree_argument():
  scorer = scorers.KVPScorer.from_artifact(_artifact())
  leaves = jax.tree_util.tree_leaves(scorer)
  assert len(leaves) == len(jax.tree_util.tree_leaves(scorer.params))
  view = base.make_view(4).replace(layer=2)
  f = jax.jit(lambda s, v: s.score(v))
  np.testing.assert_allclose(f(scorer, view), scorer.score(view), atol=1e-6)
  # Other scorers are pytrees without leaves.
  knorm = scorers.get_scorer("knorm")
  assert jax.tree_util.tree_leaves(knorm) == []
  np.testing.assert_array_equal(f(knorm, view), knorm.score(view))


def test_missing_artifact_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="needs artifact="):
    scorers.get_scorer("kvp")
  with pytest.raises(policy_lib.ArtifactError, match="not found"):
    scorers.get_scorer("kvp", artifact=tmp_path / "none.kvp")
