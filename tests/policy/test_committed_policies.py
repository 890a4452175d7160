"""The policies of committed experiments are pinned (experiments/policies.py):
each pin is the hash of the file that git history holds at the pinned
commit, and the one in the working tree, the shipped policy, loads against
the shipped model."""

import hashlib
import subprocess
from pathlib import Path

import pytest

from experiments import policies
from kvp_jax import policy as policy_lib
from kvp_jax import scorers

REPO = Path(__file__).resolve().parents[2]


def _git(*args) -> bytes:
  return subprocess.run(["git", *args], cwd=REPO, check=True,
                        capture_output=True).stdout


def test_each_pin_is_the_file_in_git_history():
  if _git("rev-parse", "--is-shallow-repository").strip() == b"true":
    pytest.skip("a shallow clone holds no history to restore policies from")
  for experiment, digest in policies.SHA256.items():
    blob = _git("show", f"{policies.COMMIT}:{policies.path(experiment)}")
    assert hashlib.sha256(blob).hexdigest() == digest, experiment


def test_only_the_shipped_policy_is_tracked():
  tracked = _git("ls-files", "*.kvp").decode().split()
  assert tracked == ["kvp_jax/policy/shipped/gemma3_270m.kvp"]
  (entry,) = policy_lib.shipped_policies()
  assert entry.sha256 == policies.SHA256["ablations/samples_k4"]


def test_the_shipped_policy_fits_the_shipped_model(gemma):
  scorer, artifact = scorers.load_policy(None, gemma)
  assert artifact.model_name == gemma.config.name
  assert scorer.name == "kvp" and artifact.protected.size > 0
