r"""What eviction costs and saves: scoring time, decode step time against the
budget, and the memory of chunked prefill.

  python benchmarks/eviction_speed.py                      # Gemma 3 270M shape
  python benchmarks/eviction_speed.py --model=tiny --dtype=float32 \
      --score_context=128 --score_batch=2 --score_budget=32 \
      --scorers=kvp,knorm,h2o --decode_contexts=256 --decode_batches=2 \
      --budgets=32,64 --decode_steps=4 --memory_context=256 \
      --memory_budget=32 --chunk_size=64 --hidden=32 --feature_width=32 \
      --repeats=2                                           # smoke test

Random weights of the configured shape (speed and memory do not depend on
them); timings are medians of --repeats runs after a warm-up (compilation).
Parts, in this order (--parts):

  memory  eviction.prefill_compressed(Eviction(--memory_budget, "chunked",
          --chunk_size)) of random prompts, scored by --memory_scorer: peak
          slots per head, cache bytes at the peak (eviction_capacities(budget,
          chunk)) vs a full cache's (layer_capacities(context + steps)), peak
          RSS (getrusage, a high-water mark: run --parts=memory alone for a
          clean reading) and device allocator peak before/after, and the
          time of a second run.
  score   after a full prefill (--score_batch x --score_context), the time
          to score every layer with each of --scorers (kvp: random agents of
          the paper's architecture), and to score and evict to --score_budget
          (select_top + compact), vs the prefill's time. h2o, tova and snapkv
          include computing their attention statistics.
  decode  a full cache of layer_capacities(context + steps) built directly
          (random keys/values at positions 0..context-1; sliding-window
          layers are rings of the window, as a prefill leaves them) and
          caches cut from it by cache.evict with random scores to each of
          --budgets (capacities eviction_capacities(budget, steps)).
          inference.decode runs --decode_steps steps (eos_id=-1) on a donated
          copy (made outside the timing; undonated, decode copies the cache
          once per call). Reported: ms/step, speed-up over the full cache,
          and the KV bytes one step reads (every slot of every layer, empty
          ones too: capacity x batch x kv_heads x head_dim x 2 x dtype bytes)
          and the valid ones, to set the speed-up against the bytes saved.

Target (issue): on an H100, batch 32, 32k context, budget 1k: a decode step
>= 3x faster than with the full cache.
"""

import functools
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

import _timing
from experiments import common
from kvp_jax import cache as cache_lib
from kvp_jax import eviction as eviction_lib
from kvp_jax import inference
from kvp_jax import model as model_lib
from kvp_jax import policy as policy_lib
from kvp_jax import scorers as scorers_lib

PROTECTED = cache_lib.Protected()     # The sinks and recent tokens kept.

_MODEL = flags.DEFINE_string("model", "gemma3_270m", "Model config preset.")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"],
                           "Param, compute and cache dtype.")
_PARTS = flags.DEFINE_list("parts", ["memory", "score", "decode"], "Parts.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per measurement.")
_HIDDEN = flags.DEFINE_integer("hidden", 256, "KVP agents' MLP width.")
_FEATURE_WIDTH = flags.DEFINE_integer("feature_width", 256,
                                      "KVP agents' key/value projection.")
_SCORERS = flags.DEFINE_list(
    "scorers", ["kvp", "random", "streaming_llm", "knorm", "keydiff", "lagkv"],
    "Scorers of the score part.")
_SCORE_CONTEXT = flags.DEFINE_integer("score_context", 2048, "Score part.")
_SCORE_BATCH = flags.DEFINE_integer("score_batch", 8, "Score part.")
_SCORE_BUDGET = flags.DEFINE_integer("score_budget", 256, "Score part.")
_CONTEXTS = flags.DEFINE_list("decode_contexts", ["8192", "32768"], "Decode.")
_BATCHES = flags.DEFINE_list("decode_batches", ["1", "32"], "Decode.")
_BUDGETS = flags.DEFINE_list("budgets", ["256", "1024", "4096"], "Decode.")
_STEPS = flags.DEFINE_integer("decode_steps", 32, "Steps per decode run.")
_MEM_CONTEXT = flags.DEFINE_integer("memory_context", 32768, "Memory part.")
_MEM_BATCH = flags.DEFINE_integer("memory_batch", 1, "Memory part.")
_MEM_BUDGET = flags.DEFINE_integer("memory_budget", 1024, "Memory part.")
_CHUNK = flags.DEFINE_integer("chunk_size", 512, "Memory part.")
_MEM_SCORER = flags.DEFINE_string("memory_scorer", "kvp", "Memory part.")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed.")
_OUT = flags.DEFINE_string("out", None, "Also write the JSON lines here.")


def _scorer(name, config, key):
  if name != "kvp":
    return scorers_lib.get_scorer(name)
  agent = policy_lib.AgentConfig.from_dict(dict(common.policy_config(
      hidden=_HIDDEN.value, feature_width=_FEATURE_WIDTH.value)))
  return scorers_lib.KVPScorer(
      agent_config=agent, layer_start=0, layer_stop=config.num_layers,
      params=policy_lib.init_agents(agent, config.num_agents,
                                    config.head_dim, key))


def _needs_stats(scorer) -> bool:                 # Reads prefill attention.
  return bool(scorer.needs & {"queries", "attention_sums"})


def _mib(config, caps, batch) -> float:
  """MiB of a cache of these per-layer capacities (keys, values, pos)."""
  return jax.eval_shape(functools.partial(
      model_lib.init_cache, config, batch, tuple(caps))).num_bytes() / 2 ** 20


@functools.partial(jax.jit, static_argnames=("config", "stats", "budget"))
def _score(config, scorer, cache, captured, positions, context, rng, stats,
           budget):
  """Scores every layer (and evicts to `budget` unless it is None)."""
  views = eviction_lib.layer_views(config, cache, captured, positions,
                                   context, None, stats)
  scores = tuple(scorer.score(v, jax.random.fold_in(rng, i))
                 for i, v in enumerate(views))
  if budget is None:
    return scores
  budgets = cache_lib.window_capped_budgets(config, budget, PROTECTED)
  return cache_lib.evict(cache, scores, budgets, cache_lib.eviction_capacities(
      config, budgets, 0), PROTECTED, context)


def _tokens(key, batch, length, vocab):
  return jax.random.randint(key, (batch, length), model_lib.BOS_ID + 1, vocab)


def memory_part(model, key, emit):
  config, b, t = model.config, _MEM_BATCH.value, _MEM_CONTEXT.value
  prompts = [[model_lib.BOS_ID] + row for row in np.asarray(
      _tokens(key, b, t - 1, config.vocab_size)).tolist()]
  scorer = _scorer(_MEM_SCORER.value, config, jax.random.fold_in(key, 1))
  eviction = eviction_lib.Eviction(_MEM_BUDGET.value, protocol="chunked",
                                   chunk_size=_CHUNK.value,
                                   protected=PROTECTED)

  def run():
    pre = eviction_lib.prefill_compressed(model, scorer, eviction, prompts,
                                          _STEPS.value,
                                          rng=jax.random.fold_in(key, 2))
    jax.block_until_ready((pre.first_logits, pre.cache))
    return pre
  row = {"what": "chunked_prefill", "batch": b, "context": t,
         "budget": _MEM_BUDGET.value, "chunk_size": _CHUNK.value,
         "scorer": _MEM_SCORER.value, "rss_mib_before": _timing.peak_rss_mb(),
         "device_mib_before": _timing.device_peak_mb()}
  pre = run()                                        # Compiles, then runs.
  row.update(rss_mib_after=_timing.peak_rss_mb(),
             device_mib_after=_timing.device_peak_mb())
  start = time.perf_counter()
  run()
  row["seconds"] = time.perf_counter() - start
  emit(dict(row, peak_slots_per_head=pre.peak_slots,
            peak_cache_mib=_mib(config, cache_lib.eviction_capacities(
                config, _MEM_BUDGET.value, _CHUNK.value), b),
            final_cache_mib=pre.cache.num_bytes() / 2 ** 20,
            full_cache_mib=_mib(config, model_lib.layer_capacities(
                config, t + _STEPS.value), b)))


def score_part(model, key, emit):
  config, params = model.config, model.params
  b, t = _SCORE_BATCH.value, _SCORE_CONTEXT.value
  tokens = _tokens(key, b, t, config.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), tokens.shape)
  caps = model_lib.layer_capacities(config, t)
  prefill_s = _timing.median_seconds(lambda: inference.prefill(
      config, params, tokens, pos, caps)[0], _REPEATS.value)
  emit({"what": "prefill", "batch": b, "context": t, "seconds": prefill_s})
  scorers = {n: _scorer(n, config, jax.random.fold_in(key, 1))
             for n in _SCORERS.value}
  _, cache, captured = inference.prefill(
      config, params, tokens, pos, caps,
      capture=any(map(_needs_stats, scorers.values())))
  context = jnp.full((b,), t, jnp.int32)
  for name, scorer in scorers.items():
    stats = _needs_stats(scorer)
    row = {"what": "score", "scorer": name, "batch": b, "context": t,
           "budget": _SCORE_BUDGET.value}
    for what, budget in (("score", None), ("score_evict", _SCORE_BUDGET.value)):
      row[f"{what}_seconds"] = sec = _timing.median_seconds(lambda: _score(
          config, scorer, cache, captured if stats else None, pos, context,
          jax.random.fold_in(key, 2), stats, budget), _REPEATS.value)
      row[f"{what}_pct_of_prefill"] = 100 * sec / prefill_s
    emit(row)


def _full_cache(config, batch, context, steps, key):
  """Random keys/values at positions 0..context-1, as a prefill leaves them
  (a ring holds the last `capacity` positions at slot position % capacity)."""
  layers = []
  for i, cap in enumerate(model_lib.layer_capacities(config, context + steps)):
    shape = (batch, config.num_kv_heads, cap, config.head_dim)
    pos = context - cap + (np.arange(cap) - context) % cap
    pos = jnp.broadcast_to(jnp.asarray(np.maximum(pos, -1), jnp.int32),
                           shape[:3])
    k, v = jax.random.normal(jax.random.fold_in(key, i), (2,) + shape,
                             jnp.dtype(config.compute_dtype))
    layers.append(model_lib.LayerCache(k=k, v=v, pos=pos,
                                       end=jnp.asarray(context, jnp.int32)))
  return model_lib.KVCache(layers=tuple(layers))


def decode_part(model, key, emit):
  config, params, steps = model.config, model.params, _STEPS.value
  head_bytes = config.head_dim * 2 * jnp.dtype(config.compute_dtype).itemsize
  run = jax.jit(lambda params, cache, logits, pos: inference.decode(
      config, params, cache, logits, pos, max_new_tokens=steps, eos_id=-1),
                donate_argnums=(1,))
  evict = jax.jit(cache_lib.evict,
                  static_argnames=("budgets", "capacities", "protected"))
  for context in map(int, _CONTEXTS.value):
    for b in map(int, _BATCHES.value):
      full = _full_cache(config, b, context, steps, key)
      logits = jnp.zeros((b, config.vocab_size), jnp.float32)
      next_pos = jnp.full((b,), context, jnp.int32)
      for budget in [None] + [int(x) for x in _BUDGETS.value if
                              int(x) < context]:
        cache = full
        if budget is not None:
          budgets = cache_lib.window_capped_budgets(config, budget, PROTECTED)
          scores = [jax.random.normal(jax.random.fold_in(key, i), l.pos.shape)
                    for i, l in enumerate(full.layers)]
          cache = evict(full, scores, budgets=budgets,
                        capacities=cache_lib.eviction_capacities(
                            config, budgets, steps), protected=PROTECTED)
        times = []
        for _ in range(_REPEATS.value + 1):           # First run: compile.
          fresh = jax.block_until_ready(jax.tree.map(jnp.copy, cache))
          start = time.perf_counter()
          jax.block_until_ready(run(params, fresh, logits, next_pos))
          times.append(time.perf_counter() - start)
        ms = 1e3 * float(np.median(times[1:])) / steps
        read = sum(l.pos.size for l in cache.layers) * head_bytes
        valid = sum(int(jnp.sum(l.pos >= 0)) for l in cache.layers)
        if budget is None:
          full_ms, full_read = ms, read
        emit({"what": "decode", "batch": b, "context": context,
              "cache": "full" if budget is None else f"budget {budget}",
              "steps": steps, "ms_per_step": ms, "speedup": full_ms / ms,
              "kv_mib_read_per_step": read / 2 ** 20,
              "kv_read_ratio": full_read / read,
              "kv_mib_valid": valid * head_bytes / 2 ** 20})


_COLUMNS = {
    "chunked_prefill": [
        "batch", "context", "budget", "chunk_size", "scorer", "seconds",
        "peak_slots_per_head", "peak_cache_mib", "full_cache_mib",
        "rss_mib_before", "rss_mib_after", "device_mib_before",
        "device_mib_after"],
    "prefill": ["batch", "context", "seconds"],
    "score": ["scorer", "batch", "context", "score_seconds",
              "score_pct_of_prefill", "budget", "score_evict_seconds",
              "score_evict_pct_of_prefill"],
    "decode": ["context", "batch", "cache", "steps", "ms_per_step", "speedup",
               "kv_mib_read_per_step", "kv_read_ratio", "kv_mib_valid"],
}


def main(argv):
  del argv
  config = model_lib.get_config(_MODEL.value, param_dtype=_DTYPE.value,
                                compute_dtype=_DTYPE.value)
  model = model_lib.random_model(config, seed=_SEED.value)
  key = jax.random.key(_SEED.value + 1)
  emitter = _timing.Emitter(_OUT.value)
  parts = {"memory": memory_part, "score": score_part, "decode": decode_part}
  for i, name in enumerate(parts):
    if name in _PARTS.value:
      parts[name](model, jax.random.fold_in(key, i), emitter.emit)
  print(f"\n{config.name} ({_DTYPE.value}, random weights) on "
        f"{_timing.device_line()}")
  for what, keys in _COLUMNS.items():
    rows = [r for r in emitter.rows if r["what"] == what]
    if rows:
      print(f"\n{what}\n" + _timing.rows_table(rows, keys))


if __name__ == "__main__":
  app.run(main)
