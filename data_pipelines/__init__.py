"""The runnable data jobs: make_samples (JSONL samples), generate_traces
(a trace store), needle_depth (full-cache accuracy by needle depth).

The library code they run (sample schema, generators, scoring, the trace job)
is in kvp_jax.samples and kvp_jax.traces; nothing in kvp_jax imports this
package."""
