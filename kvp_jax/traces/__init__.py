"""Traces: future-attention targets, recording, the trace store, and the
job that records a config's samples into a store (resumably)."""

from kvp_jax.traces._capture import record_traces
from kvp_jax.traces._capture import TARGETS
from kvp_jax.traces._capture import Trace
from kvp_jax.traces._importance import future_importance
from kvp_jax.traces._importance import value_write_norms
from kvp_jax.traces._store import RecordInfo
from kvp_jax.traces._store import SPLITS
from kvp_jax.traces._store import StoreError
from kvp_jax.traces._store import StoreLayout
from kvp_jax.traces._store import TraceStore
from kvp_jax.traces._job import generate_traces
from kvp_jax.traces._job import plan_batches
from kvp_jax.traces._job import recording_settings
from kvp_jax.traces._job import PlannedSample
from kvp_jax.traces._job import ReusedTraces
from kvp_jax.traces._job import split_settings
from kvp_jax.traces._job import store_metadata
from kvp_jax.traces._job import trace_target
