r"""Prefill throughput and decode step time of the decoder.

  python benchmarks/model_speed.py                       # Gemma 3 270M shape
  python benchmarks/model_speed.py --contexts=1024 --prefill_batches=1

Uses random weights of the configured shape (speed does not depend on the
values). Prefill: one jitted call that fills a fresh full cache (the last
position's logits only). Decode: a jitted greedy loop of --decode_steps tokens
after a prefill of the context, per-token time = loop time / steps. Prints one
JSON line per measurement and a table; timings are medians of --repeats runs
after a warm-up (compilation excluded).
"""

import json

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

import _timing

from kvp_jax import inference
from kvp_jax import model as model_lib

_MODEL = flags.DEFINE_string("model", "gemma3_270m", "Model config preset.")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"],
                           "Param and compute dtype.")
_CONTEXTS = flags.DEFINE_list("contexts", ["1024", "4096"], "Context lengths.")
_PREFILL_BATCHES = flags.DEFINE_list("prefill_batches", ["1", "8", "32"],
                                     "Batch sizes for prefill.")
_DECODE_BATCHES = flags.DEFINE_list("decode_batches", ["1", "32"],
                                    "Batch sizes for decoding.")
_DECODE_STEPS = flags.DEFINE_integer("decode_steps", 32, "Tokens per decode run.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per measurement.")


def main(argv):
  del argv
  config = model_lib.get_config(_MODEL.value, param_dtype=_DTYPE.value,
                                compute_dtype=_DTYPE.value)
  params = model_lib.init_params(config, jax.random.key(0))
  device = jax.devices()[0]
  rows = []
  for context in map(int, _CONTEXTS.value):
    for batch in map(int, _PREFILL_BATCHES.value):
      tokens = jax.random.randint(jax.random.key(1), (batch, context), 0,
                                  config.vocab_size)
      pos = jnp.broadcast_to(jnp.arange(context, dtype=jnp.int32), tokens.shape)
      caps = model_lib.layer_capacities(config, context)
      sec = _timing.median_seconds(lambda: inference.prefill(
          config, params, tokens, pos, caps)[0], _REPEATS.value)
      rows.append({"what": "prefill", "batch": batch, "context": context,
                   "seconds": sec, "tokens_per_s": batch * context / sec})
      print(json.dumps(rows[-1]), flush=True)
    for batch in map(int, _DECODE_BATCHES.value):
      steps = _DECODE_STEPS.value
      tokens = jax.random.randint(jax.random.key(2), (batch, context), 0,
                                  config.vocab_size)
      pos = jnp.broadcast_to(jnp.arange(context, dtype=jnp.int32), tokens.shape)
      caps = model_lib.layer_capacities(config, context + steps)
      logits, cache, _ = inference.prefill(config, params, tokens, pos, caps)
      next_pos = jnp.full((batch,), context, jnp.int32)

      def run():
        return inference.decode(config, params, cache, logits, next_pos,
                                max_new_tokens=steps, eos_id=-1)[0]
      sec = _timing.median_seconds(run, _REPEATS.value)
      rows.append({"what": "decode", "batch": batch, "context": context,
                   "seconds": sec, "ms_per_step": 1e3 * sec / steps})
      print(json.dumps(rows[-1]), flush=True)
  print(f"\n{config.name} ({_DTYPE.value}, random weights) on "
        f"{device.platform}:{device.device_kind}, jax {jax.__version__}")
  print("| what | batch | context | result |\n|---|---|---|---|")
  for r in rows:
    result = (f"{r['tokens_per_s']:,.0f} tokens/s" if r["what"] == "prefill"
              else f"{r['ms_per_step']:.2f} ms/step")
    print(f"| {r['what']} | {r['batch']} | {r['context']} | {result} |")


if __name__ == "__main__":
  app.run(main)
