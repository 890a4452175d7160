"""Evaluation: generation and scoring with an evicted cache, suites, reports."""

from kvp_jax.evaluation._compressed import ALLOCATIONS
from kvp_jax.evaluation._compressed import calibrate_scores
from kvp_jax.evaluation._compressed import compress_context
from kvp_jax.evaluation._compressed import Context
from kvp_jax.evaluation._compressed import continuation_log_likelihood
from kvp_jax.evaluation._compressed import evict_cache
from kvp_jax.evaluation._compressed import Eviction
from kvp_jax.evaluation._compressed import EvictWhenFull
from kvp_jax.evaluation._compressed import generate_compressed
from kvp_jax.evaluation._compressed import layer_views
from kvp_jax.evaluation._compressed import prefill_compressed
from kvp_jax.evaluation._compressed import prefill_context
from kvp_jax.evaluation._compressed import PROTOCOLS
from kvp_jax.evaluation._report import aggregate
from kvp_jax.evaluation._report import markdown
from kvp_jax.evaluation._runner import evaluate
from kvp_jax.evaluation._runner import Grid
from kvp_jax.evaluation._runner import make_scorers
from kvp_jax.evaluation._runner import run_grid
from kvp_jax.evaluation._suites import build_suite
from kvp_jax.evaluation._suites import Item
