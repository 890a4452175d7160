"""Eviction scorers: one small class per rule, registered by name.

A scorer maps a LayerView (one layer's cache, plus the statistics it needs)
to [batch, kv_heads, slots] float32 scores, higher = keep, -inf at empty
slots. Importing this package registers every baseline of the method's
section 6 and the oracle:

  kvp                                             (a trained policy)
  random, streaming_llm, knorm, keydiff, lagkv   (the cache only)
  h2o, tova, snapkv                               (prefill attention)
  roco                                            (prefill attention moments)
  oracle                                          (the future)
"""

from kvp_jax.scorers._attention_stats import attention_column_moments
from kvp_jax.scorers._attention_stats import attention_column_sums
from kvp_jax.scorers._attention_stats import last_queries_attention
from kvp_jax.scorers._base import available_scorers
from kvp_jax.scorers._base import BASELINE_FAMILIES
from kvp_jax.scorers._base import FAMILIES
from kvp_jax.scorers._base import family_of
from kvp_jax.scorers._base import get_scorer
from kvp_jax.scorers._base import MissingInputError
from kvp_jax.scorers._base import NEEDS
from kvp_jax.scorers._base import PREFILL_ATTENTION
from kvp_jax.scorers._base import register
from kvp_jax.scorers._base import Scorer
from kvp_jax.scorers._base import scorers_in
from kvp_jax.scorers._h2o import H2OScorer
from kvp_jax.scorers._keydiff import KeyDiffScorer
from kvp_jax.scorers._knorm import KNormScorer
from kvp_jax.scorers._kvp import KVPScorer
from kvp_jax.scorers._kvp import load_policy
from kvp_jax.scorers._lagkv import LagKVScorer
from kvp_jax.scorers._oracle import OracleScorer
from kvp_jax.scorers._random import RandomScorer
from kvp_jax.scorers._roco import RoCoScorer
from kvp_jax.cache._slots import slot_order
from kvp_jax.cache._slots import SlotOrder
from kvp_jax.scorers._snapkv import SnapKVScorer
from kvp_jax.scorers._streaming_llm import StreamingLLMScorer
from kvp_jax.scorers._tova import TOVAScorer
from kvp_jax.scorers._view import LayerView
