"""Random eviction (method section 6: "random")."""

from __future__ import annotations

import dataclasses

import jax

from kvp_jax.scorers._base import register, Scorer


@register
@dataclasses.dataclass(frozen=True)
class RandomScorer(Scorer):
  """score_j ~ Uniform[0, 1), independently per slot, from `rng`.

  Shape [batch, kv_heads, slots]; a random ranking, the floor any rule
  should beat.
  """
  name = "random"
  needs = frozenset({"rng"})

  def _score(self, view, rng):
    return jax.random.uniform(rng, view.positions.shape)
