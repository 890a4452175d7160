"""The policies committed beside the experiments' results
(experiments/results/<name>/policy.kvp, and the method ablations'
experiments/results/ablations/<name>/policy.kvp) load against the shipped model: its
fingerprint and shape, so an evaluation reruns without retraining."""

from pathlib import Path

from kvp_jax import scorers

REPO = Path(__file__).resolve().parents[2]


def test_committed_policies_fit_the_shipped_model(gemma):
  paths = sorted([*REPO.glob("experiments/results/*/policy.kvp"),
                  *REPO.glob("experiments/results/ablations/*/policy.kvp")])
  assert REPO / "experiments/results/quickstart/policy.kvp" in paths
  for path in paths:
    scorer, artifact = scorers.load_policy(path, gemma)
    assert artifact.model_name == gemma.config.name, path
    assert scorer.name == "kvp"
    assert artifact.protected.size > 0
