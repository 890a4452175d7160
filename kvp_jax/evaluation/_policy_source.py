"""Where a grid's extra policies come from (config.eval.policies)."""

from __future__ import annotations

import dataclasses
import re

# Scorer names of the extra policies (eval.policies): "kvp_" + a label.
POLICY_NAME = re.compile(r"kvp_[A-Za-z0-9_]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclasses.dataclass(frozen=True)
class PolicySource:
  """Where a grid's policy comes from.

  Attributes:
    path: the exported artifact ("shipped": the policy shipped for the
      model).
    sha256: the artifact's hash, pinned (optional): a file with another
      hash is refused, and a report (--report_only) needs no file.
    commit: a git commit whose tree holds `path` (optional): a file that is
      not in the working tree is restored from there
      (`git show COMMIT:PATH > PATH`).
  """
  path: str
  sha256: str = ""
  commit: str = ""

  @classmethod
  def parse(cls, name: str, value) -> PolicySource:
    """From a path, or a mapping with path and optionally sha256, commit;
    ValueError naming config.eval.policies.<name> otherwise."""
    where = f"config.eval.policies.{name}"
    if isinstance(value, PolicySource):
      return value
    if isinstance(value, str):
      value = {"path": value}
    elif hasattr(value, "items"):
      value = dict(value.items())
    else:
      raise ValueError(f"{where}: expected the path of an exported policy "
                       f"or a mapping with its path, got {value!r}")
    unknown = sorted(set(value) - {"path", "sha256", "commit"})
    if unknown:
      raise ValueError(f"{where}: unknown fields {unknown}; known: path, "
                       "sha256, commit")
    source = cls(**{k: str(v) for k, v in value.items()})
    if not source.path:
      raise ValueError(f"{where}: expected the path of an exported policy, "
                       f"got {source.path!r}")
    if source.sha256 and not _SHA256.fullmatch(source.sha256):
      raise ValueError(f"{where}.sha256: {source.sha256!r} is not a sha256 "
                       "(64 lowercase hex digits)")
    return source


def policy_pairs(policies) -> tuple[tuple[str, PolicySource], ...]:
  """config.eval.policies as ((name, PolicySource), ...), every entry
  checked."""
  if policies is None:
    return ()
  if isinstance(policies, tuple) and all(
      isinstance(p, tuple) and len(p) == 2 for p in policies):
    items = policies                    # Already normalised (a replace()).
  elif hasattr(policies, "items"):
    items = tuple(policies.items())
  else:
    raise ValueError("config.eval.policies: expected a mapping {scorer name:"
                     f" policy path}}, got {type(policies).__name__} "
                     f"{policies!r}")
  for name, _ in items:
    if not isinstance(name, str) or not POLICY_NAME.fullmatch(name):
      raise ValueError(f"config.eval.policies: {name!r} is not a policy's "
                       "scorer name: use 'kvp_' + letters, digits or _ "
                       "(e.g. kvp_contrast)")
  return tuple((str(n), PolicySource.parse(n, v)) for n, v in items)
