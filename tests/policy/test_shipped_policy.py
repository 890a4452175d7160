"""The policy shipped inside the package: it is the one its index names, it
was trained on the shipped model, and `--scorer=kvp` without `--policy`
(and load_policy(None, model)) uses it; a model without one gets an error
saying how to train one."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvp_jax import model as model_lib
from kvp_jax import policy as policy_lib
from kvp_jax import scorers
from kvp_jax.model import _gguf

ROOT = Path(__file__).resolve().parents[2]


def test_the_index_describes_its_artifacts():
  entries = policy_lib.shipped_policies()
  assert [e.model_name for e in entries] == ["gemma3_270m"]
  for entry in entries:
    assert entry.path.is_file(), entry
    assert hashlib.sha256(entry.path.read_bytes()).hexdigest() == entry.sha256
    artifact = policy_lib.load_artifact(entry.path)
    assert artifact.model_name == entry.model_name
    assert artifact.model_fingerprint == entry.model_fingerprint
    assert (ROOT / entry.experiment).is_file(), entry.experiment
    assert entry.path.stat().st_size < 20 * 2**20      # Small enough to ship.


def test_a_damaged_shipped_file_is_refused(tmp_path, monkeypatch):
  from kvp_jax.policy import _shipped  # pylint: disable=g-import-not-at-top
  (entry,) = policy_lib.shipped_policies()
  (tmp_path / "index.json").write_text(_shipped.INDEX.read_text())
  (tmp_path / entry.file).write_bytes(entry.path.read_bytes()[:-1])
  monkeypatch.setattr(_shipped, "SHIPPED_DIR", tmp_path)
  monkeypatch.setattr(_shipped, "INDEX", tmp_path / "index.json")
  with pytest.raises(policy_lib.ArtifactError, match="damaged install"):
    policy_lib.resolve_policy_path(None, "gemma3_270m")
  (tmp_path / entry.file).unlink()
  with pytest.raises(policy_lib.ArtifactError, match="is missing"):
    policy_lib.resolve_policy_path("shipped", "gemma3_270m")
  assert policy_lib.resolve_policy_path("my.kvp", "gemma3_270m") == "my.kvp"


def test_shipped_artifact_matches_the_shipped_models_fingerprint():
  # The shipped model's fingerprint, computed without loading its weights
  # (its GGUF's hash is known), as a decoder in float32 would have it.
  fingerprint = model_lib.model_fingerprint(model_lib.gemma3_270m(),
                                            _gguf.shipped_gguf_sha256())
  entry = policy_lib.shipped_policy("gemma3_270m", fingerprint)
  assert policy_lib.load_artifact(entry.path).model_fingerprint == fingerprint


def test_load_policy_without_a_path_uses_the_shipped_one(gemma):
  scorer, artifact = scorers.load_policy(None, gemma)
  entry = policy_lib.shipped_policy(gemma.config.name, gemma.fingerprint)
  shipped = policy_lib.load_artifact(entry.path)
  assert (artifact.info, artifact.agent_config) == (shipped.info,
                                                    shipped.agent_config)
  assert scorer.fingerprint == gemma.fingerprint
  again, _ = scorers.load_policy("shipped", gemma)
  assert again.fingerprint == scorer.fingerprint


def test_a_model_without_a_shipped_policy_is_told_how_to_train_one():
  tiny = model_lib.random_model(model_lib.get_config("tiny"))
  with pytest.raises(policy_lib.ArtifactError,
                     match="no KVP policy ships for model tiny") as e:
    scorers.load_policy(None, tiny)
  assert "python -m kvp_jax.pipeline" in str(e.value)
  # Same name, other weights: refused by fingerprint.
  with pytest.raises(policy_lib.ArtifactError, match="fingerprint 0000"):
    policy_lib.shipped_policy("gemma3_270m", "0000")


def test_generate_with_the_shipped_policy_and_no_training_run():
  prompt = " ".join(f"item {i} is {i * 7 % 13}." for i in range(60))
  proc = subprocess.run(
      [sys.executable, "-m", "kvp_jax.generate", f"--prompt={prompt}",
       "--budget=64", "--scorer=kvp", "--max_new_tokens=4"],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
      capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr
  assert prompt[-20:] in proc.stdout, proc.stdout
