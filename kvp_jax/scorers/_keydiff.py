"""KeyDiff: keep distinctive keys (method section 6; Park et al. 2025,
arXiv 2504.15364)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from kvp_jax.scorers._base import register, Scorer

_EPS = 1e-8


@register
@dataclasses.dataclass(frozen=True)
class KeyDiffScorer(Scorer):
  """score_j = -cos(k_j, a), a = mean over the valid slots of k / ||k||.

  One anchor a [head_dim] per (batch, kv_head); empty slots are left out of
  the mean. Shape [batch, kv_heads, slots]; keys least similar to the
  anchor score highest.
  """
  name = "keydiff"

  def _score(self, view, rng):
    k = view.keys.astype(jnp.float32)                             # [B, K, S, H]
    valid = view.valid[..., None]
    norm = jnp.linalg.norm(k, axis=-1, keepdims=True)             # [B, K, S, 1]
    unit = jnp.where(valid, k / jnp.maximum(norm, _EPS), 0.0)
    count = jnp.maximum(jnp.sum(valid, axis=2), 1)                # [B, K, 1]
    anchor = jnp.sum(unit, axis=2) / count                        # [B, K, H]
    dot = jnp.einsum("bksh,bkh->bks", k, anchor,
                     precision="highest")
    denom = (jnp.maximum(norm[..., 0], _EPS)
             * jnp.maximum(jnp.linalg.norm(anchor, axis=-1), _EPS)[..., None])
    return -dot / denom
