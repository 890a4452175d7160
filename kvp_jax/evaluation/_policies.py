"""A grid's policies, resolved once: path, hash and artifact.

`resolve_policies` runs before the model loads (python -m kvp_jax.evaluate
checks the config with it) and its result is passed down: each artifact is
read once, its sha256 is the sample log's identity of the policy's cells,
and `scorers_for` checks it against the loaded decoder once and makes its
scorer. A policy pinned by sha256 (eval.policies entries with path, sha256
and commit) needs no file to report from the log (--report_only); to
compute, a file that is not in the working tree is restored from git
history by the command its error prints.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Mapping

from kvp_jax import cache as cache_lib
from kvp_jax import policy as policy_lib
from kvp_jax import scorers as scorers_lib
from kvp_jax.evaluation._config import EvalConfig, PolicySource


@dataclasses.dataclass(frozen=True)
class GridPolicy:
  """One policy of a grid.

  Attributes:
    name: its scorer name ("kvp", "kvp_<label>").
    path: the artifact's path (the shipped one resolved).
    sha256: the artifact's hash: the file's, or the pinned one when the
      file is absent and only a report is asked for.
    artifact: the loaded artifact; None when only a report is asked for.
  """
  name: str
  path: str
  sha256: str
  artifact: policy_lib.PolicyArtifact | None = None


def _sha256(path: Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def _restore_hint(source: PolicySource) -> str:
  if not source.commit:
    return ""
  return (f"; restore it from git history: git show "
          f"{source.commit}:{source.path} > {source.path}")


def resolve_policy(name: str, source: PolicySource, model_name: str,
                   fingerprint: str | None = None, *,
                   load: bool = True) -> GridPolicy:
  """One policy, its hash checked against the pin and (load=True) its
  artifact read.

  Raises:
    ArtifactError: the file is missing (and needed), is not an artifact,
      or its hash is not the pinned one; no policy ships for the model.
  """
  path = Path(policy_lib.resolve_policy_path(source.path, model_name,
                                             fingerprint))
  if path.is_file():
    digest = _sha256(path)
    if source.sha256 and digest != source.sha256:
      raise policy_lib.ArtifactError(
          f"policy {name}: {path} has sha256 {digest[:16]}..., the config "
          f"pins {source.sha256[:16]}... (another policy under that path"
          f"{_restore_hint(source)})")
    artifact = policy_lib.load_artifact(path) if load else None
    return GridPolicy(name, str(path), digest, artifact)
  if source.sha256 and not load:
    return GridPolicy(name, str(path), source.sha256)
  raise policy_lib.ArtifactError(
      f"policy {name}: artifact not found: {path}{_restore_hint(source)}")


def resolve_policies(ec: EvalConfig, workdir: str | Path, model_name: str,
                     fingerprint: str | None = None, *, load: bool = True,
                     made_later: bool = False,
                     resolved: Mapping[str, GridPolicy] | None = None
                     ) -> dict[str, GridPolicy]:
  """Every policy of the grid ({scorer name: GridPolicy}): "kvp" (eval.
  policy, else <workdir>/policy.kvp), then eval.policies. made_later: an
  earlier stage of the same job makes "kvp"'s policy, so it is left out
  (the evaluation stage resolves it). `resolved`: policies resolved before
  (by name), taken as they are.

  Raises:
    ArtifactError: naming every policy that is missing or unusable.
  """
  resolved = resolved or {}
  out, errors = {}, []
  default = str(Path(workdir) / "policy.kvp")
  for name, source in ec.policy_sources(default).items():
    if made_later and name == "kvp":
      continue
    try:
      out[name] = resolved.get(name) or resolve_policy(
          name, source, model_name, fingerprint, load=load)
    except policy_lib.ArtifactError as e:
      errors.append(str(e))
  if errors:  # every unusable policy named at once, not one per rerun.
    raise policy_lib.ArtifactError(" | ".join(errors))
  return out


def scorers_for(policies: Mapping[str, GridPolicy], model
                ) -> tuple[dict[str, scorers_lib.Scorer],
                           cache_lib.Protected | None]:
  """Each loaded policy checked against the decoder and made a scorer, and
  the policies' protected set (None without a loaded policy).

  Raises:
    ArtifactError: a policy was trained on another decoder.
    ValueError: two policies protect different tokens (their cells would
      not be comparable).
  """
  out, protected, first = {}, None, None
  c = model.config
  for name, policy in policies.items():
    if policy.artifact is None:
      continue
    policy.artifact.check_model(model.fingerprint, c.num_layers,
                                c.num_kv_heads, c.head_dim)
    out[name] = scorers_lib.KVPScorer.from_artifact(policy.artifact)
    theirs = policy.artifact.protected
    if protected is None:
      protected, first = theirs, name
    elif theirs != protected:
      raise ValueError(
          f"policies {first!r} and {name!r} protect different tokens "
          f"({protected.num_sinks} sinks and {protected.num_recent} recent "
          f"against {theirs.num_sinks} and {theirs.num_recent}); evaluate "
          "them in separate grids")
  return out, protected
