"""The trained policies that ship inside the package, one per model.

`--scorer=kvp` without `--policy` (generate, perplexity), `eval.policy =
"shipped"` (evaluate) and `kvp_jax.scorers.load_policy(None, model)` score
with the policy shipped for the loaded model. shipped/index.json lists them
(model name and fingerprint, file, sha256, the experiment that trained it
and the evidence for it), so finding one reads no artifact; loading it
checks the artifact against the decoder as any policy file is checked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from kvp_jax.policy._artifact import ArtifactError

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
INDEX = SHIPPED_DIR / "index.json"
SHIPPED = "shipped"   # The eval.policy value that names the shipped policy.

HOW_TO_TRAIN = (
    "train one (python -m kvp_jax.pipeline --config=experiments/"
    "ruler_agents_k4.py --workdir=runs/ruler_k4, with "
    "config.model naming your model) and pass its policy.kvp "
    "(--policy=runs/ruler_k4/policy.kvp, or eval.policy)")


@dataclasses.dataclass(frozen=True)
class ShippedPolicy:
  """One entry of shipped/index.json.

  Attributes:
    file: the artifact, relative to SHIPPED_DIR.
    model_name, model_fingerprint: the decoder it was trained on.
    sha256: the artifact's hash.
    experiment: the config that trained it (experiments/<name>.py).
    evidence: where its comparison with the baselines is written down.
  """
  file: str
  model_name: str
  model_fingerprint: str
  sha256: str
  experiment: str
  evidence: str

  @property
  def path(self) -> Path:
    return SHIPPED_DIR / self.file


def shipped_policies() -> list[ShippedPolicy]:
  """Every shipped policy (an empty list when none ships)."""
  if not INDEX.is_file():
    return []
  return [ShippedPolicy(**entry)
          for entry in json.loads(INDEX.read_text(encoding="utf-8"))]


def shipped_policy(model_name: str, fingerprint: str | None = None
                   ) -> ShippedPolicy:
  """The policy shipped for a model: by name, and by fingerprint when given
  (a decoder with other weights or dtypes has another fingerprint).

  Raises:
    ArtifactError saying that none ships for that model and how to train one.
  """
  for entry in shipped_policies():
    if entry.model_name == model_name and fingerprint in (
        None, entry.model_fingerprint):
      return entry
  shipped = ", ".join(f"{e.model_name} (fingerprint {e.model_fingerprint})"
                      for e in shipped_policies()) or "none"
  which = model_name if fingerprint is None else (
      f"{model_name} with fingerprint {fingerprint}")
  raise ArtifactError(f"no KVP policy ships for model {which} (shipped: "
                      f"{shipped}); {HOW_TO_TRAIN}")


def resolve_policy_path(path: str | None, model_name: str,
                        fingerprint: str | None = None) -> str:
  """`path`, or for None / "" / "shipped" the policy shipped for the model
  (shipped_policy's errors; ArtifactError when its file is not the one the
  index names, e.g. a damaged install)."""
  if path and str(path) != SHIPPED:
    return str(path)
  entry = shipped_policy(model_name, fingerprint)
  if not entry.path.is_file():
    raise ArtifactError(f"the shipped policy {entry.path} is missing "
                        "(reinstall the package)")
  digest = hashlib.sha256(entry.path.read_bytes()).hexdigest()
  if digest != entry.sha256:
    raise ArtifactError(f"the shipped policy {entry.path} has sha256 "
                        f"{digest[:16]}..., its index {entry.sha256[:16]}... "
                        "(a damaged install: reinstall the package)")
  return str(entry.path)
