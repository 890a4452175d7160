"""kvp_jax: learning which KV-cache entries a language model can evict.

KV Policy (KVP): small per-(layer, KV head) policies, trained offline with
reinforcement learning on recorded traces, rank cached tokens by predicted
future attention from their keys, values and positions alone; one ranking
serves every cache budget. Beside it: the query-free and query-aware
baselines (kvp_jax.scorers, RoCo among them).

The pipeline, in import order (a package imports only those above it):

  model       Gemma-3-style decoder, GGUF conversion, tokenizer
  cache       top-b selection, compaction, budgets, the protected set
  samples     sample schema, task scoring, offline sample generators
  inference   prefill, extend, decode, continuation scoring (full cache)
  policy      the per-head agents (vmapped) and the exported artifact
  scorers     KVP and every baseline behind one interface
  traces      future importance, trace recording, the tensorstore store
  data        the grain input pipeline over a trace store
  objective   Plackett-Luce sampling, budget-summed reward, RLOO loss
  training    mesh, sharded step, validation, checkpoints, export
  eviction    inference with eviction: compress once, chunked prefill,
              decode-time eviction, for any scorer
  evaluation  the grid of scorers x budgets x suites, runner, report
  distributed JAX's multi-controller runtime for multi-process commands
  configs, _files, _locks   typed config sections, atomic writes, writer
              locks (utilities any package may use)
  *.py        command lines (flags only; the work is in the library)

Shape letters, used in every docstring and comment:

  A  agents (one per (layer, KV head) a policy covers: L' x K)
  B  batch (prompts or traces)
  D  model width
  G  query heads per KV head (N // K)
  H  head dimension
  K  key/value heads
  L  layers (L': the layers a store or policy covers)
  M  records of a trace store
  N  query heads
  P  absolute token positions (an axis indexed by position, not by slot)
  R  split points of a trace (prompt lengths its importance targets use)
  S  cache slots (a layer's capacity; slots are not sorted by position)
  T  tokens of a sequence or chunk
  V  vocabulary
"""
