"""What training checks before it writes anything: that the trace store was
recorded with the model and the recording settings the config names.

The expected metadata mirrors what the trace job writes into a store's
metadata.json (kvp_jax.traces.store_metadata): the model's name,
fingerprint and compute dtype, the generation settings, the split
fractions and seed, and, for stored features, the dtype of the stored keys
and values. Left out: the data sources (a store may grow by more sources)
and whether keys and values are stored (training with recomputed features
reads only tokens; stored features check that they are there).
A setting a store's metadata does not hold (an older store) is not checked.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kvp_jax import model as model_lib
from kvp_jax import traces as traces_lib
from kvp_jax.model import _gguf


def _get(spec, key, default=None):
  return spec.get(key, default) if hasattr(spec, "get") else getattr(
      spec, key, default)


def model_identity(spec) -> dict[str, Any]:
  """Name, fingerprint and compute dtype of the model a `model` config
  section names, without loading its weights where it can (the shipped
  GGUF's hash is known; a user's GGUF is hashed; random weights are made).

  The fingerprint is None when it cannot be known (the shipped model's
  package is not installed).
  """
  dtypes = {k: _get(spec, k) for k in ("param_dtype", "compute_dtype")
            if _get(spec, k)}
  config = model_lib.get_config(_get(spec, "name", "gemma3_270m"), **dtypes)
  source = _get(spec, "source", "gguf")
  if source == "random":
    fingerprint = model_lib.random_model(
        config, seed=int(_get(spec, "seed", 0))).fingerprint
  elif source == "gguf":
    gguf = _get(spec, "gguf")
    if gguf:
      if not Path(gguf).is_file():
        raise ValueError(f"config.model.gguf: GGUF file not found: {gguf}")
      sha = _gguf.file_sha256(gguf)
    else:
      sha = _gguf.shipped_gguf_sha256()
    fingerprint = None if sha is None else model_lib.model_fingerprint(
        config, sha)
  else:
    raise ValueError(f"config.model.source: must be 'gguf' or 'random', got "
                     f"{source!r}")
  return {"name": config.name, "fingerprint": fingerprint,
          "compute_dtype": config.compute_dtype}


def expected_store_metadata(config, model: dict[str, Any] | None = None
                            ) -> dict[str, Any]:
  """What a store recorded with `config` holds in its metadata.json.

  Args:
    config: the whole experiment config (its model, traces and input
      sections).
    model: the model's identity (default: `model_identity(config.model)`).
  """
  t = config.traces
  layout = {}
  if config.input.features == "stored":
    layout["kv_dtype"] = str(t.kv_dtype)
  return {
      "model": dict(model or model_identity(config.model)),
      **traces_lib.recording_settings(t),
      "layout": layout,
  }


def metadata_differences(stored: dict, expected: dict, prefix: str = ""
                         ) -> list[str]:
  """"key: store has A, config has B" for each expected setting the stored
  metadata holds with another value (None expected: not checked)."""
  diffs = []
  for key, want in expected.items():
    if key not in stored or want is None:
      continue
    have = stored[key]
    if isinstance(want, dict) and isinstance(have, dict):
      diffs += metadata_differences(have, want, f"{prefix}{key}.")
    elif have != want:
      diffs.append(f"{prefix}{key}: store has {have!r}, config has {want!r}")
  return diffs


def check_store(config, store: traces_lib.TraceStore,
                model: dict[str, Any] | None = None) -> None:
  """Refuses a store recorded with another model or other settings.

  Args:
    config: the whole experiment config.
    store: the opened trace store.
    model: the model's identity when the caller already has it (a loaded
      decoder's); default: `model_identity(config.model)`.
  Raises:
    StoreError naming the store and every differing setting.
  """
  expected = expected_store_metadata(config, model)
  if expected["model"]["fingerprint"] is None:
    logging.warning("cannot tell the fingerprint of config.model (the shipped "
                    "model package is not installed); checking its name only")
  diffs = metadata_differences(store.metadata, expected)
  # The target is in a store's metadata only when it is not the paper's.
  stored_target = store.metadata.get("target", "attention")
  wanted = traces_lib.trace_target(config.traces)
  if stored_target != wanted and not any(d.startswith("target")
                                         for d in diffs):
    diffs.append(f"target: store has {stored_target!r}, config has "
                 f"{wanted!r}")
  if diffs:
    raise traces_lib.StoreError(
        f"{store.path} was recorded with another model or other settings "
        f"than this config (point config.traces.store at a matching store or "
        f"record one): " + "; ".join(diffs))
