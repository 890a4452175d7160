"""The exported policy artifact: round trip, provenance, wrong model, junk."""

import jax
import numpy as np
import pytest

from kvp_jax import policy as policy_lib
from kvp_jax import training
from tests.training import synthetic


def test_export_round_trip(tmp_path):
  synthetic.make_store(tmp_path / "traces", num_traces=16)
  cfg = synthetic.tiny_config(tmp_path / "traces", steps=4, eval_every=2,
                              checkpoint_every=2)
  training.train_and_evaluate(cfg, tmp_path / "run", progress=False)
  path = training.export_policy(tmp_path / "run", tmp_path / "p.kvp")
  art = policy_lib.load_artifact(path)
  want, step = training.restore_params(tmp_path / "run", which="best")
  # The checkpoint's params, the embeddings cut to the trained range.
  for a, b in zip(jax.tree_util.tree_leaves(art.params),
                  jax.tree_util.tree_leaves(want)):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_array_equal(a, b[tuple(slice(0, n) for n in a.shape)])
  fingerprint = training.model_identity(cfg.model)["fingerprint"]
  assert art.info["step"] == step and art.model_fingerprint == fingerprint
  assert art.model_name == "tiny"
  # The run's config plus the trained range the export records.
  ac = art.agent_config
  assert ac.trained_max_position is not None
  assert ac.max_position == min(
      training.policy_config(cfg).max_position,
      max(ac.trained_max_position, ac.trained_max_age) + 1)
  assert ac.replace(trained_max_position=None, trained_max_age=None,
                    max_position=training.policy_config(cfg).max_position
                    ) == training.policy_config(cfg)
  assert (art.layer_start, art.layer_stop, art.num_kv_heads) == (0, 2, 1)
  assert art.agent_index(1) == (1, 2)
  art.check_model(fingerprint, 2, 1, 8)
  with pytest.raises(policy_lib.ArtifactError, match="fingerprint"):
    art.check_model("other", 2, 1, 8)
  with pytest.raises(policy_lib.ArtifactError, match="layers"):
    art.check_model(fingerprint, 3, 1, 8)
  with pytest.raises(policy_lib.ArtifactError, match="no agents for layer 2"):
    art.agent_index(2)
  assert path.stat().st_size < 2**20            # Small: ~33k params x 2.


def test_bad_artifacts(tmp_path):
  with pytest.raises(policy_lib.ArtifactError, match="not found"):
    policy_lib.load_artifact(tmp_path / "missing.kvp")
  junk = tmp_path / "junk.kvp"
  junk.write_bytes(b"\x00\x01 not msgpack")
  with pytest.raises(policy_lib.ArtifactError, match="junk.kvp"):
    policy_lib.load_artifact(junk)
  with pytest.raises(FileNotFoundError, match="not a training run"):
    training.export_policy(tmp_path)
