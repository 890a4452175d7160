"""Recording a config's samples into a trace store, resumably.

The job builds every sample of the config's sources, tokenises the prompts,
groups them into batches of similar length (one compiled program per length
bucket), and records and commits one batch at a time. The batch plan depends
only on the config, so a killed job rebuilds the same plan, skips the
committed samples and continues with the next batch; a finished job has
nothing left to do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from kvp_jax import samples as samples_lib
from kvp_jax.samples import sources as sources_lib
from kvp_jax import inference
from kvp_jax.traces._capture import record_traces
from kvp_jax.traces._store import StoreLayout
from kvp_jax.traces._store import TraceStore
from kvp_jax.model import Pretrained


@dataclasses.dataclass(frozen=True)
class PlannedSample:
  """A sample ready to record: prompt ids (BOS first), optional given
  continuation ids, and its train/validation/test split."""
  sample: samples_lib.Sample
  prompt: tuple[int, ...]
  continuation: tuple[int, ...] | None
  split: str


def split_of(sample_id: str, seed: int,
             fractions: Sequence[float]) -> str:
  """train/validation/test by a seeded hash of the id (order-independent)."""
  if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(
      fractions) < 0:
    raise ValueError(f"split_fractions must be 3 non-negative numbers summing "
                     f"to 1, got {tuple(fractions)}")
  u = zlib.crc32(f"{seed}|{sample_id}".encode()) / 2 ** 32
  if u < fractions[0]:
    return "train"
  return "validation" if u < fractions[0] + fractions[1] else "test"


def sample_rng(sample_id: str, seed: int) -> np.random.Generator:
  """The generator of a sample's random split points."""
  return np.random.default_rng([seed, zlib.crc32(sample_id.encode())])


def plan_batches(samples: Sequence[samples_lib.Sample], tokenizer,
                 cfg) -> list[list[PlannedSample]]:
  """Batches of samples with prompts in the same length bucket.

  Raises ValueError for a sample whose trace cannot fit the store.
  """
  prompts = tokenizer.encode_batch(
      [samples_lib.prompt_text(s) for s in samples], add_bos=True)
  buckets: dict[int, list[PlannedSample]] = {}
  for sample, prompt in zip(samples, prompts):
    cont = None
    if cfg.continuation == "reference":
      if not sample.continuation:
        raise ValueError(f"sample {sample.id!r} has no continuation text, "
                         "needed with traces.continuation='reference'")
      cont = tuple(tokenizer.encode(sample.continuation)[:cfg.max_new_tokens])
    elif cfg.continuation != "greedy":
      raise ValueError("traces.continuation must be 'greedy' or 'reference', "
                       f"got {cfg.continuation!r}")
    if len(prompt) + cfg.max_new_tokens > cfg.max_length:
      raise ValueError(
          f"sample {sample.id!r}: {len(prompt)} prompt tokens + "
          f"{cfg.max_new_tokens} new tokens exceed traces.max_length="
          f"{cfg.max_length}")
    bucket = inference.bucket_length(len(prompt), cfg.pad_multiple)
    buckets.setdefault(bucket, []).append(PlannedSample(
        sample, tuple(prompt), cont,
        split_of(sample.id, cfg.seed, cfg.split_fractions)))
  plan = []
  for bucket in sorted(buckets):
    items = buckets[bucket]
    for i in range(0, len(items), cfg.batch_size):
      plan.append(items[i:i + cfg.batch_size])
  return plan


def recording_settings(cfg) -> dict[str, Any]:
  """The `traces` section's settings that decide a trace's content (the
  store records them; training checks its config against them)."""
  return {
      "generation": {"max_new_tokens": int(cfg.max_new_tokens),
                     "continuation": str(cfg.continuation),
                     "num_random_splits": int(cfg.num_random_splits),
                     "min_prompt_length": int(cfg.min_prompt_length)},
      "split_fractions": [float(x) for x in cfg.split_fractions],
      "seed": int(cfg.seed),
  }


def store_metadata(model: Pretrained, cfg) -> dict[str, Any]:
  """What decides a trace's content (a reopened store must match it)."""
  tok = hashlib.sha256(model.tokenizer.proto).hexdigest()[:16] if (
      model.tokenizer) else None
  return {
      "model": {"name": model.config.name, "fingerprint": model.fingerprint,
                "compute_dtype": model.config.compute_dtype},
      "tokenizer": tok,
      **recording_settings(cfg),
      "data_source": json.loads(json.dumps(_plain(cfg.sources))),
      "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
  }


def _plain(x):
  if hasattr(x, "to_dict"):
    return x.to_dict()
  if isinstance(x, Mapping):
    return {k: _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  return x


def generate_traces(model: Pretrained, cfg, store_path: str | Path, *,
                    samples: Sequence[samples_lib.Sample] | None = None,
                    max_batches: int | None = None,
                    progress: bool = True) -> TraceStore:
  """Records the config's samples into the store at store_path.

  Args:
    model: the frozen decoder (its tokenizer builds the prompts).
    cfg: the config's `traces` section.
    samples: samples to record instead of building cfg.sources.
    max_batches: stop after this many new batches (tests, smoke runs).
  Returns:
    The store, with every planned sample committed (unless max_batches).
  """
  if samples is None:
    samples = sources_lib.build_samples(cfg.sources, model.tokenizer)
  if not samples:
    raise ValueError("traces.sources produced no samples")
  plan = plan_batches(samples, model.tokenizer, cfg)
  c = model.config
  layout = StoreLayout(
      num_layers=c.num_layers, num_kv_heads=c.num_kv_heads,
      head_dim=c.head_dim, max_length=int(cfg.max_length),
      num_splits=1 + int(cfg.num_random_splits), with_kv=bool(cfg.with_kv),
      kv_dtype=cfg.kv_dtype,
      layer_windows=tuple(c.layer_window(i) or 0
                          for i in range(c.num_layers)))
  store = TraceStore.create_or_resume(
      store_path, store_metadata(model, cfg), layout)
  done = store.committed_ids()
  todo = [[p for p in batch if p.sample.id not in done] for batch in plan]
  todo = [batch for batch in todo if batch]
  if max_batches is not None:
    todo = todo[:max_batches]
  total = sum(map(len, todo))
  if not todo:
    logging.info("%s: all %d samples already recorded", store_path,
                 len(samples))
    return store
  bar = tqdm(total=total, desc="recording traces", unit="trace",
             disable=not progress)
  start, tokens = time.time(), 0
  for batch in todo:
    # Pad short batches with copies of their first sample (dropped after), so
    # every batch of a bucket reuses one compiled program.
    rows = batch + [batch[0]] * (cfg.batch_size - len(batch))
    given = [list(p.continuation) for p in rows] if (
        cfg.continuation == "reference") else None
    recorded = record_traces(
        model, [list(p.prompt) for p in rows], None,
        max_new_tokens=int(cfg.max_new_tokens), with_kv=bool(cfg.with_kv),
        kv_dtype=cfg.kv_dtype, pad_multiple=int(cfg.pad_multiple),
        continuations=given, num_random_splits=int(cfg.num_random_splits),
        min_prompt_length=int(cfg.min_prompt_length),
        rngs=[sample_rng(p.sample.id, int(cfg.seed)) for p in rows])
    recorded = recorded[:len(batch)]
    store.append(recorded, [{"id": p.sample.id, "task": p.sample.task,
                             "split": p.split} for p in batch])
    tokens += sum(t.length for t in recorded)
    bar.update(len(batch))
    bar.set_postfix(tokens_per_s=f"{tokens / (time.time() - start):.0f}")
  bar.close()
  return store
