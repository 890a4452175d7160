"""Prefill, decoding and continuation scoring over an explicit KV cache,
with the full cache (eviction is kvp_jax.eviction, built on this)."""

from kvp_jax.inference._batching import bucket_length
from kvp_jax.inference._batching import check_context
from kvp_jax.inference._batching import left_pad
from kvp_jax.inference._batching import pad_batch
from kvp_jax.inference._batching import PaddedBatch
from kvp_jax.inference._generation import decode
from kvp_jax.inference._generation import decode_with_state
from kvp_jax.inference._generation import DecodeHook
from kvp_jax.inference._generation import extend
from kvp_jax.inference._generation import prefill
from kvp_jax.inference._generation import score_continuation
from kvp_jax.inference._pipeline import cut_after_eos
from kvp_jax.inference._pipeline import generate
from kvp_jax.inference._pipeline import prefill_prompts
from kvp_jax.inference._pipeline import sequence_log_likelihood
