"""The protected set: the tokens every eviction keeps.

The first `num_sinks` tokens of a context (attention sinks) and its last
`num_recent` tokens are always kept and count inside every budget. It is one
value per experiment: set once in the config (`input.num_sinks`,
`input.num_recent`), used by training to leave those tokens out of the
ranking, recorded in the exported policy artifact, and read from there by
evaluation, generation and perplexity. Every function that needs it takes a
`Protected`; none has its own default.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class Protected:
  """The always-kept tokens (hashable: a static argument under jit)."""
  num_sinks: int = 4
  num_recent: int = 16

  def __post_init__(self):
    for name in ("num_sinks", "num_recent"):
      value = getattr(self, name)
      if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
          or value < 0):
        raise ValueError(f"protected {name} must be an int >= 0, got "
                         f"{value!r}")
      object.__setattr__(self, name, int(value))

  @property
  def size(self) -> int:
    """The smallest budget: the protected tokens always fit inside it."""
    return self.num_sinks + self.num_recent

  def to_dict(self) -> dict[str, int]:
    return dataclasses.asdict(self)

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> Protected:
    """From a mapping with num_sinks and num_recent (e.g. config.input)."""
    return cls(num_sinks=config["num_sinks"], num_recent=config["num_recent"])

  def check_same(self, other: Protected, what: str) -> None:
    """ValueError unless `other` (from `what`) is this protected set."""
    if other != self:
      raise ValueError(
          f"protected tokens differ: {what} keeps {other.num_sinks} sinks and "
          f"{other.num_recent} recent tokens, the config "
          f"{self.num_sinks} and {self.num_recent}; use the same "
          f"input.num_sinks / input.num_recent (or drop them from the config "
          f"to take the policy's)")
