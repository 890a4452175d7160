"""The policies of committed experiments, pinned: where each was exported
to, its sha256, and a commit whose tree holds the file.

Only the shipped policy (kvp_jax/policy/shipped/, "kvp" in every grid) is in
the working tree; the others are kept out of it so that a clone stays small,
and come back from git history when an evaluation needs them:

  git show 1e1adeefd89c7b36d80532b61e284afb9a5a16e9:PATH > PATH

(an evaluation that lacks one stops with that command in its error). A
report (python -m kvp_jax.evaluate ... --report_only) needs none of them:
the pinned hash is the sample log's identity of the policy's cells.
"""

COMMIT = "1e1adeefd89c7b36d80532b61e284afb9a5a16e9"
RESULTS = "experiments/results"

# Experiment (its results directory under RESULTS) -> the policy's sha256.
SHA256 = {
    "quickstart":
        "33d3ef45015cb0ec3dfeb1987b5ca708d2e2a5cf7789e1f1f89ad72870fc079a",
    "ruler_agents":
        "12b7dd14982acd3401e9309bbe3c736a420e8d46500e56d0818fd341fe869bb7",
    "ruler_agents_contrast":
        "96f4164397743b073888b36df37679e5a8ae9780c2cd86ef815de2c218c850a7",
    "dialogue_agents":
        "f32087e1893ac890529441e47e373f2a37c8fab5cb193da2c63e63bf3a4c42f2",
    "mixed_agents":
        "133d77eb1705c504209a7244243ee2e58f0f5fa643b35a8f9289aafd3303fe8a",
    "long_conversations":
        "9bb39027baef2af95190a6479a10bd25e89b61ebc536237a8f02a6b122c5526f",
    "ablations/futures_reference":
        "f50cf6fe15bc0184192f8f9829abb1d4101f54c75165473fcbf4e29643db9bba",
    "ablations/position_absolute":
        "0380512b622282684758800582b257ce0421f2f1e5b9931223ad94ebfb47e73c",
    "ablations/position_age":
        "3c74a5c0256ede18ddef169cd74a32d61902b404b3c7fb5d8e40ad80428c8936",
    "ablations/position_none":
        "c84786c1eefd94aa1642a04b22f4761e408face8c396859638bed58477b686c7",
    "ablations/reward_harmonic":
        "df3dcf84854ed29723a42b7ead12223014b2c5915051d18f9259fd60375e6cbd",
    "ablations/reward_truncated512":
        "fb28e9f8df19c65452ad940ce50efbb78a08f7e7612c72f029813527c97aee53",
    # The shipped policy (kvp_jax/policy/shipped/gemma3_270m.kvp).
    "ablations/samples_k4":
        "1f0e62604ede9420be9168a371d347c4b606fbfac3c17e257466b04bc8f8451a",
    "ablations/target_value_weighted":
        "e653abd25ffdace215b48b90d0e27cb322626a221c46f0a541a583b4db51a0e7",
}


def path(experiment: str) -> str:
  """Where the experiment's policy was committed."""
  return f"{RESULTS}/{experiment}/policy.kvp"


def pinned(experiment: str) -> dict[str, str]:
  """The experiment's policy as an eval.policies entry (PolicySource)."""
  if experiment not in SHA256:
    raise ValueError(f"no committed policy {experiment!r}; committed: "
                     f"{', '.join(SHA256)}")
  return {"path": path(experiment), "sha256": SHA256[experiment],
          "commit": COMMIT}
