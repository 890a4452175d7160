"""Eviction as a pure gather, and budget allocators.

  Protected                                     the always-kept tokens
  select_top / compact / evict_layer / evict   keep each head's top b slots
  mask_evicted                                  the same, emulated by masking
  uniform_budgets / adaptive_budgets            how many slots each head keeps
  slot_order / rank_descending                  slots in position / score order

This package knows caches and scores, not where the scores come from: it
imports only kvp_jax.model.
"""

from kvp_jax.cache._allocation import adaptive_budgets
from kvp_jax.cache._allocation import normalise_scores_within_head
from kvp_jax.cache._allocation import SCOPES
from kvp_jax.cache._allocation import tighten
from kvp_jax.cache._allocation import uniform_budgets
from kvp_jax.cache._allocation import window_capped_budgets
from kvp_jax.cache._eviction import Budgets
from kvp_jax.cache._eviction import check_budget
from kvp_jax.cache._eviction import compact
from kvp_jax.cache._eviction import context_length_of
from kvp_jax.cache._eviction import evict
from kvp_jax.cache._eviction import evict_layer
from kvp_jax.cache._eviction import eviction_capacities
from kvp_jax.cache._eviction import keep_mask_protected
from kvp_jax.cache._eviction import kept_mask
from kvp_jax.cache._eviction import mask_evicted
from kvp_jax.cache._eviction import NO_SLOT
from kvp_jax.cache._eviction import select_top
from kvp_jax.cache._protected import Protected
from kvp_jax.cache._slots import rank_descending
from kvp_jax.cache._slots import slot_order
from kvp_jax.cache._slots import SlotOrder
