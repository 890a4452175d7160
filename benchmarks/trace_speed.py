r"""Trace generation throughput, store write included, and store bytes/token.

  python benchmarks/trace_speed.py                  # Gemma 3 270M, 2k tokens
  python benchmarks/trace_speed.py --model=tiny_gemma_vocab \
      --prompt_length=120 --max_new_tokens=8 --pad_multiple=128 \
      --batch_size=2 --num_batches=2                         # smoke test

What is measured: the loop of kvp_jax/traces/_job.py (generate_traces)
on synthetic prompts. Each prompt is BOS + random token ids of the
vocabulary, --prompt_length tokens in all (default 2048 - max_new_tokens, so
a trace is 2048 tokens); the model has random weights of the configured
shape (speed does not depend on the values). Per batch:

  record  kvp_jax.traces.record_traces: prefill with capture, greedy
          continuation of --max_new_tokens, capture of the continuation,
          future importance of every (layer, KV head), copy to the host
          (it returns numpy arrays, so the call is synchronous);
  write   TraceStore.append into a fresh store in a temporary directory
          (under --store_dir), committed like the real job's.

The first batch is excluded (compilation; every batch has the same shape).
Trace tokens are prompt + continuation as stored (greedy decoding with random
weights may stop early at EOS; the tokens actually recorded are counted).
Reported per store kind: trace tokens/s for recording alone and with the
write, and bytes on disk per trace token from TraceStore.num_bytes() (all
batches, the first included). "stored" keeps keys and values (--kv_dtype),
"recomputed" only tokens and importance (with_kv=False).

Target (issue): on an H100, >= 50k trace tokens/s for 2k-token samples, store
write included.
"""

import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np

import _timing
from kvp_jax import model as model_lib
from kvp_jax import traces as traces_lib

_MODEL = flags.DEFINE_string("model", "gemma3_270m", "Model config preset.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "Param and compute dtype of the model (the "
                           "experiments record traces in float32).")
_KV_DTYPE = flags.DEFINE_enum("kv_dtype", "bfloat16", ["float32", "bfloat16"],
                              "Dtype of stored keys and values.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 64,
                                       "Greedy continuation length.")
_PROMPT_LENGTH = flags.DEFINE_integer(
    "prompt_length", None, "Prompt tokens (BOS included); default "
    "2048 - max_new_tokens.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Prompts per batch.")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 4,
                                    "Timed batches (after one warm-up batch).")
_NUM_RANDOM_SPLITS = flags.DEFINE_integer(
    "num_random_splits", 0, "Extra random split points per trace.")
_PAD_MULTIPLE = flags.DEFINE_integer("pad_multiple", 256,
                                     "Prompt padding multiple (bucket).")
_STORES = flags.DEFINE_list("stores", ["stored", "recomputed"],
                            "Store kinds: stored (with keys/values) and/or "
                            "recomputed (without).")
_STORE_DIR = flags.DEFINE_string("store_dir", None,
                                 "Directory for the temporary stores "
                                 "(default: the system temp directory).")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed (weights and prompts).")
_OUT = flags.DEFINE_string("out", None, "Also write the JSON lines here.")


def _prompts(key, batch: int, length: int, vocab: int) -> list[list[int]]:
  """BOS + random ids in (BOS_ID, vocab): no PAD, EOS or BOS inside."""
  ids = jax.random.randint(key, (batch, length - 1), model_lib.BOS_ID + 1,
                           vocab)
  return [[model_lib.BOS_ID] + row for row in np.asarray(ids).tolist()]


def _measure(model, kind: str, prompt_length: int) -> dict:
  c = model.config
  with_kv = kind == "stored"
  layout = traces_lib.StoreLayout(
      num_layers=c.num_layers, num_kv_heads=c.num_kv_heads,
      head_dim=c.head_dim, max_length=prompt_length + _MAX_NEW_TOKENS.value,
      num_splits=1 + _NUM_RANDOM_SPLITS.value, with_kv=with_kv,
      kv_dtype=_KV_DTYPE.value, layer_windows=tuple(
          c.layer_window(i) or 0 for i in range(c.num_layers)))
  b = _BATCH_SIZE.value
  record_s = write_s = 0.0
  tokens = all_tokens = 0
  with tempfile.TemporaryDirectory(dir=_STORE_DIR.value) as tmp:
    store = traces_lib.TraceStore.create_or_resume(
        f"{tmp}/store", {"model": {"name": c.name,
                                   "fingerprint": model.fingerprint}}, layout)
    for i in range(1 + _NUM_BATCHES.value):           # Batch 0: compilation.
      prompts = _prompts(jax.random.fold_in(jax.random.key(_SEED.value), i),
                         b, prompt_length, c.vocab_size)
      start = time.perf_counter()
      recorded = traces_lib.record_traces(
          model, prompts, None, max_new_tokens=_MAX_NEW_TOKENS.value,
          with_kv=with_kv, kv_dtype=_KV_DTYPE.value,
          pad_multiple=_PAD_MULTIPLE.value,
          num_random_splits=_NUM_RANDOM_SPLITS.value,
          rngs=[np.random.default_rng([_SEED.value, i, j]) for j in range(b)])
      mid = time.perf_counter()
      store.append(recorded, [{"id": f"b{i}r{j}", "task": "synthetic",
                               "split": "train"} for j in range(b)])
      end = time.perf_counter()
      n = sum(t.length for t in recorded)
      all_tokens += n
      if i > 0:
        record_s += mid - start
        write_s += end - mid
        tokens += n
    num_bytes = store.num_bytes()
  return {"what": "traces", "store": kind, "batch": b,
          "prompt_length": prompt_length,
          "max_new_tokens": _MAX_NEW_TOKENS.value,
          "timed_batches": _NUM_BATCHES.value, "trace_tokens": tokens,
          "record_seconds": record_s, "write_seconds": write_s,
          "record_tokens_per_s": tokens / record_s,
          "tokens_per_s": tokens / (record_s + write_s),
          "store_bytes": num_bytes, "bytes_per_token": num_bytes / all_tokens}


def main(argv):
  del argv
  config = model_lib.get_config(_MODEL.value, param_dtype=_DTYPE.value,
                                compute_dtype=_DTYPE.value)
  model = model_lib.random_model(config, seed=_SEED.value)
  prompt_length = _PROMPT_LENGTH.value or 2048 - _MAX_NEW_TOKENS.value
  emitter = _timing.Emitter(_OUT.value)
  for kind in _STORES.value:
    if kind not in ("stored", "recomputed"):
      raise app.UsageError(f"unknown store kind {kind!r}")
    emitter.emit(_measure(model, kind, prompt_length))
  print(f"\n{config.name} ({_DTYPE.value}, random weights; keys/values "
        f"stored as {_KV_DTYPE.value}) on {_timing.device_line()}")
  print(_timing.table(
      ["store", "batch", "prompt + new", "record tokens/s",
       "tokens/s with write", "bytes/token"],
      [[r["store"], r["batch"],
        f"{r['prompt_length']} + {r['max_new_tokens']}",
        f"{r['record_tokens_per_s']:,.0f}", f"{r['tokens_per_s']:,.0f}",
        f"{r['bytes_per_token']:,.0f}"] for r in emitter.rows]))


if __name__ == "__main__":
  app.run(main)
