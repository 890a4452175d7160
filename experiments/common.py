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


def policy_config(**overrides) -> ml_collections.ConfigDict:
  """The agent of method section 3 (kvp_jax.policy.AgentConfig fields)."""
  c = ml_collections.ConfigDict({
      "hidden": 256, "feature_width": 256, "position_dim": 32,
      "max_position": 6000, "num_mlp_layers": 2, "use_keys": True,
      "use_values": True, "use_position": True, "use_key_contrast": False,
      "position_mode": "absolute",
      "dtype": "bfloat16"})
  c.update(overrides)
  return c


def input_config(**overrides) -> ml_collections.ConfigDict:
  """Training batches (kvp_jax.data.InputConfig fields). `layers` = None
  trains every layer's agents; eval_split_mode is used for validation."""
  c = ml_collections.ConfigDict({
      "batch_size": 128, "buckets": (512, 1024, 2048, 4096),
      "split_mode": "true", "eval_split_mode": "true", "num_sinks": 4,
      "num_recent": 16, "layers": ml_collections.FieldReference(
          None, field_type=tuple), "features": "stored", "seed": 0,
      "num_workers": 0})
  c.update(overrides)
  return c


def train_config(**overrides) -> ml_collections.ConfigDict:
  """Optimisation (method section 4 defaults)."""
  c = ml_collections.ConfigDict({
      "steps": 4000, "learning_rate": 5e-5, "warmup_steps": 100,
      "warmup_init_fraction": 0.01, "final_learning_rate": 1e-6,
      "adam_eps": 1e-8, "weight_decay": 1e-3, "grad_clip": 5.0,
      "ema_decay": 0.99, "ema_start": 100, "num_samples": 1, "seed": 42,
      "eval_every": 200, "checkpoint_every": 200, "log_every": 10,
      "max_eval_batches": ml_collections.FieldReference(None, field_type=int),
      "stop_after": ml_collections.FieldReference(None, field_type=int),
      "mesh_heads": 1})
  c.update(overrides)
  return c


def base_config() -> ml_collections.ConfigDict:
  """Every section, at the paper's settings, on the shipped Gemma 3 270M."""
  c = ml_collections.ConfigDict()
  c.model = model_config()
  c.traces = traces_config()
  c.policy = policy_config()
  c.input = input_config()
  c.train = train_config()
  c.eval = eval_config()
  return c


ALL_SCORERS = ("kvp", "random", "streaming_llm", "knorm", "keydiff", "lagkv",
               "h2o", "tova", "snapkv", "oracle")


def ruler_suite(tasks=RULER_TASKS, lengths=(2048, 4096), num_samples=8,
                seed=2000, max_new_tokens=None, name="ruler") -> dict:
  """Held-out RULER-style tasks (seed 2000: not the training traces')."""
  suite = {"kind": "ruler", "name": name, "sources": [ruler_source(
      tasks, lengths, num_samples, seed)]}
  if max_new_tokens is not None:
    suite["max_new_tokens"] = max_new_tokens
  return suite


def dialogue_suite(lengths=(2048,), num_samples=16, seed=2000,
                   name="dialogues") -> dict:
  """Perplexity of held-out dialogues' reference continuations."""
  return {"kind": "perplexity", "name": name, "sources": [dialogue_source(
      lengths, num_samples, seed, pool="heldout")]}


PRIMARY_METRICS = ("accuracy", "perplexity", "normalised_cost")
EVAL_METRICS = PRIMARY_METRICS + ("fidelity", "evicted_share")


def eval_config(suites=(), **overrides) -> ml_collections.ConfigDict:
  """The evaluation grid (python -m kvp_jax.evaluate).

  scorers: names (kvp_jax.scorers); "kvp" reads `policy` (default
    <workdir>/policy.kvp).
  budgets: tokens kept per (layer, KV head), sinks and recent included.
  protocol: "once" (the paper), "chunked", or "decode".
  allocation: "uniform" (the paper), "layer" or "model".
  include_full: also run the uncompressed cache.
  metrics: the primary metrics (accuracy, perplexity, normalised_cost) and
    the optional ones: "fidelity" (teacher-forced agreement, KL and
    log-likelihood of the full cache's tokens, every suite but
    attention_cost) and "evicted_share" (attention_cost: evicted share of
    future importance at budgets 64..512). Leave them out to keep an older
    config's results.jsonl unchanged.
  """
  c = ml_collections.ConfigDict({
      "scorers": list(ALL_SCORERS), "policy": "",
      "budgets": [64, 128, 256, 512, 1024], "protocol": "once",
      "allocation": "uniform", "chunk_size": 512, "decode_interval": 32,
      "batch_size": 8, "include_full": True, "suites": list(suites),
      "output_dir": "", "seed": 0, "metrics": list(EVAL_METRICS)})
  c.update(overrides)
  return c
