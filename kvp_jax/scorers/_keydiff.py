"""KeyDiff: keep distinctive keys (method section 6; Park et al. 2025,
arXiv 2504.15364)."""

from __future__ import annotations

import dataclasses

from kvp_jax.policy import key_contrast
from kvp_jax.scorers._base import register, Scorer


@register
@dataclasses.dataclass(frozen=True)
class KeyDiffScorer(Scorer):
  """score_j = -cos(k_j, a), a = mean over the valid slots of k / ||k||.

  One anchor a [head_dim] per (batch, kv_head); empty slots are left out of
  the mean. Shape [batch, kv_heads, slots]; keys least similar to the
  anchor score highest. The anchor is the one KVP agents read with
  `use_key_contrast` (kvp_jax.policy.key_contrast).
  """
  name = "keydiff"

  def _score(self, view, rng):
    _, cosine = key_contrast(view.keys, view.valid)             # [B, K, S]
    return -cosine
