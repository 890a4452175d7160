"""Config sections shared by the experiments.

Each experiment file's `get_config()` starts from `base_config()` and changes
only what it is about; every field can also be overridden on the command line
(`--config.train.steps=100`).
"""

from __future__ import annotations

import ml_collections

GEMMA = "gemma3_270m"
RULER_TASKS = ("niah_single_1", "niah_single_2", "niah_single_3",
               "niah_multikey_1", "niah_multikey_2", "niah_multikey_3",
               "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe")


def model_config(name: str = GEMMA, source: str = "gguf",
                 dtype: str = "float32") -> ml_collections.ConfigDict:
  """The frozen decoder: a preset name, weights from the shipped GGUF (or a
  user's `gguf` path), or random weights for tests."""
  return ml_collections.ConfigDict({
      "name": name, "source": source, "gguf": "", "seed": 0,
      "param_dtype": dtype, "compute_dtype": dtype, "cache_dir": ""})


def ruler_source(tasks=RULER_TASKS, lengths=(2048,), num_samples=8,
                 seed=0) -> dict:
  return {"kind": "ruler", "tasks": list(tasks), "lengths": list(lengths),
          "num_samples": num_samples, "seed": seed}


def dialogue_source(lengths=(2048,), num_samples=64, seed=0,
                    pool="train") -> dict:
  return {"kind": "dialogues", "lengths": list(lengths),
          "num_samples": num_samples, "seed": seed, "pool": pool}


def traces_config(sources=(), **overrides) -> ml_collections.ConfigDict:
  """How traces are recorded (data_pipelines.generate_traces).

  store: the store directory ("" = <workdir>/traces).
  max_new_tokens: greedy continuation length (the paper uses ~300).
  continuation: "greedy" (the paper) or "reference" (a sample's own
    continuation text, for dialogues and documents).
  num_random_splits: extra split points per trace, uniform in
    [min_prompt_length, T) (the paper's Algorithm 1, for dialogues).
  max_length: longest trace the store holds (prompt + continuation).
  with_kv: store keys and values ("stored" features) or only what the
    trainer needs to recompute them ("recomputed").
  """
  c = ml_collections.ConfigDict({
      "store": "", "sources": list(sources), "max_new_tokens": 64,
      "continuation": "greedy", "num_random_splits": 0,
      "min_prompt_length": 64, "batch_size": 4, "pad_multiple": 256,
      "max_length": 4096 + 512, "with_kv": True, "kv_dtype": "bfloat16",
      "split_fractions": (0.8, 0.1, 0.1), "seed": 0})
  c.update(overrides)
  return c
