"""Traces: future-attention targets, recording, and the trace store."""

from kvp_jax.traces._capture import record_traces
from kvp_jax.traces._capture import Trace
from kvp_jax.traces._importance import future_importance
from kvp_jax.traces._store import RecordInfo
from kvp_jax.traces._store import SPLITS
from kvp_jax.traces._store import StoreError
from kvp_jax.traces._store import StoreLayout
from kvp_jax.traces._store import TraceStore
