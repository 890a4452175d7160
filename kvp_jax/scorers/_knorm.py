"""K-norm: keep low-norm keys (method section 6; Devoto et al. 2024,
arXiv 2406.11430)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from kvp_jax.scorers._base import register, Scorer


@register
@dataclasses.dataclass(frozen=True)
class KNormScorer(Scorer):
  """score_j = -||k_j||_2 over the head dim; shape [batch, kv_heads, slots].

  Keys with a small norm tend to draw the most attention, so they are kept.
  """
  name = "knorm"

  def _score(self, view, rng):
    return -jnp.linalg.norm(view.keys.astype(jnp.float32), axis=-1)
