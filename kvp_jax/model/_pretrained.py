"""A pretrained model from a GGUF file, converted once into an orbax cache.

The first load of a GGUF dequantises it (tens of seconds) and saves the
params, the tokenizer and a metadata record under
`<cache_dir>/models/<config>-<sha256[:16]>/`. The directory is built under a
temporary name and renamed into place only when complete, so a killed
conversion is never mistaken for a good one. Later loads take seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kvp_jax import _files
from kvp_jax.model import _gguf
from kvp_jax.model._config import DecoderConfig, gemma3_270m
from kvp_jax.model._tokenizer import Tokenizer, build_model_proto

CACHE_ENV = "KVP_JAX_CACHE"
_FORMAT_VERSION = 1


def default_cache_dir() -> Path:
  """$KVP_JAX_CACHE, else $XDG_CACHE_HOME/kvp_jax, else ~/.cache/kvp_jax."""
  if os.environ.get(CACHE_ENV):
    return Path(os.environ[CACHE_ENV])
  base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
  return Path(base) / "kvp_jax"


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """A model ready to run.

  Attributes:
    config: the DecoderConfig (dtypes as asked for at load time).
    params: parameter tree (jax arrays in config.param_dtype).
    tokenizer: the model's Tokenizer.
    fingerprint: hash of the architecture and the weights; trace stores and
      exported policies record it and refuse a model with another one.
    source: where the weights came from (GGUF path or "random").
  """
  config: DecoderConfig
  params: Any
  tokenizer: Tokenizer | None
  fingerprint: str
  source: str


def model_fingerprint(config: DecoderConfig, weights_id: str) -> str:
  """Fingerprint of a model: its architecture plus an id of its weights."""
  text = f"{config.architecture_fingerprint()}:{weights_id}"
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def params_digest(params: Any) -> str:
  """sha256 over every parameter's bytes (random and small models)."""
  digest = hashlib.sha256()
  for path, leaf in sorted(
      jax.tree_util.tree_flatten_with_path(params)[0],
      key=lambda kv: jax.tree_util.keystr(kv[0])):
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(np.asarray(leaf).tobytes())
  return digest.hexdigest()


def random_model(config: DecoderConfig, seed: int = 0) -> Pretrained:
  """A model with random weights (tests and speed benchmarks)."""
  from kvp_jax.model._decoder import init_params  # pylint: disable=g-import-not-at-top
  params = init_params(config, jax.random.key(seed))
  return Pretrained(config=config, params=params, tokenizer=None,
                    fingerprint=model_fingerprint(config, params_digest(params)),
                    source=f"random(seed={seed})")


def _gguf_identity(path: Path) -> str:
  """The GGUF's sha256 (the shipped file's is known without hashing it)."""
  shipped = _gguf.shipped_gguf_sha256()
  try:
    default = _gguf.default_gguf_path() if shipped else None
  except _gguf.GGUFError:
    default = None
  if default is not None and path.resolve() == default.resolve():
    return shipped
  return _gguf.file_sha256(path)


def load_tokenizer(gguf_path: str | os.PathLike[str] | None = None,
                   cache_dir: str | os.PathLike[str] | None = None) -> Tokenizer:
  """The tokenizer of a GGUF (the shipped Gemma 3 270M by default), cached."""
  path = Path(gguf_path) if gguf_path else _gguf.default_gguf_path()
  sha = _gguf_identity(path)
  cached = Path(cache_dir or default_cache_dir()) / "tokenizers" / f"{sha[:16]}.model"
  if cached.is_file():
    return Tokenizer.from_proto(cached.read_bytes())
  reader = _gguf.open_gguf(path)
  proto = build_model_proto(*_gguf.read_vocabulary(reader, path))
  _files.atomic_write(cached, proto)
  return Tokenizer.from_proto(proto)


def _convert(path: Path, config: DecoderConfig, target: Path, sha: str) -> None:
  """Dequantises a GGUF and saves params + tokenizer + meta under target."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  logging.info("converting %s (first use; cached afterwards)", path)
  reader = _gguf.open_gguf(path)
  _gguf.check_architecture(reader, config, path)
  proto = build_model_proto(*_gguf.read_vocabulary(reader, path))
  with tqdm(total=len(reader.tensors), desc=f"dequantising {path.name}",
            unit="tensor", leave=False) as bar:
    tensors = _gguf.read_tensors(reader, config, path,
                                 progress=lambda _: bar.update())
  params = _gguf.to_flax_params(tensors, config)
  target.parent.mkdir(parents=True, exist_ok=True)
  staging = Path(tempfile.mkdtemp(dir=target.parent,
                                  prefix=target.name + ".partial-"))
  try:
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(staging / "params", params)
    (staging / "tokenizer.model").write_bytes(proto)
    meta = {"format_version": _FORMAT_VERSION, "gguf_path": str(path),
            "gguf_sha256": sha, "config": config.to_dict(),
            "fingerprint": model_fingerprint(config, sha),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (staging / "meta.json").write_text(json.dumps(meta, indent=2))
    if target.exists() and not (target / "meta.json").is_file():
      shutil.rmtree(target)  # Left by something other than a finished rename.
    try:
      os.rename(staging, target)
    except OSError:
      if not (target / "meta.json").is_file():  # Not a racing twin: re-raise.
        raise
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def load_pretrained(gguf_path: str | os.PathLike[str] | None = None, *,
                    config: DecoderConfig | None = None,
                    cache_dir: str | os.PathLike[str] | None = None,
                    param_dtype: str | None = None,
                    compute_dtype: str | None = None) -> Pretrained:
  """Loads a Gemma 3 GGUF (the shipped Gemma 3 270M by default).

  Args:
    gguf_path: a Gemma 3 GGUF; None for the shipped model.
    config: its DecoderConfig (Gemma 3 270M by default); the file's metadata
      and tensor shapes are checked against it.
    cache_dir: where converted checkpoints live (default_cache_dir()).
    param_dtype, compute_dtype: override the config's dtypes.
  Raises:
    GGUFError: missing, truncated or corrupt file, or a model that does not
      match the config; the message names the file and the mismatch.
  """
  config = config or gemma3_270m()
  overrides = {k: v for k, v in (("param_dtype", param_dtype),
                                 ("compute_dtype", compute_dtype)) if v}
  config = config.replace(**overrides)
  path = Path(gguf_path) if gguf_path else _gguf.default_gguf_path()
  if not path.is_file():
    raise _gguf.GGUFError(f"GGUF file not found: {path}")
  sha = _gguf_identity(path)
  target = (Path(cache_dir or default_cache_dir()) / "models" /
            f"{config.name}-{config.architecture_fingerprint()[:8]}-{sha[:16]}")
  if not (target / "meta.json").is_file():
    _convert(path, config, target, sha)
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(target / "params")
  dtype = jnp.dtype(config.param_dtype)
  params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params)
  tokenizer = Tokenizer.from_proto((target / "tokenizer.model").read_bytes())
  return Pretrained(config=config, params=params, tokenizer=tokenizer,
                    fingerprint=model_fingerprint(config, sha),
                    source=str(path))


def load_model(spec) -> Pretrained:
  """The model an experiment config's `model` section names.

  Fields: name (a config preset), source ("gguf" or "random"), gguf (path or
  None for the shipped model), seed (random weights), param_dtype,
  compute_dtype, cache_dir.
  """
  from kvp_jax.model._config import get_config  # pylint: disable=g-import-not-at-top
  get = (lambda k, d=None: spec.get(k, d)) if hasattr(spec, "get") else (
      lambda k, d=None: getattr(spec, k, d))
  dtypes = {k: get(k) for k in ("param_dtype", "compute_dtype") if get(k)}
  config = get_config(get("name", "gemma3_270m"), **dtypes)
  source = get("source", "gguf")
  if source == "random":
    model = random_model(config, seed=int(get("seed", 0)))
    if config.vocab_size == gemma3_270m().vocab_size:  # Gemma's vocabulary.
      model = dataclasses.replace(model, tokenizer=load_tokenizer())
    return model
  if source != "gguf":
    raise ValueError(f"model.source must be 'gguf' or 'random', got {source!r}")
  return load_pretrained(get("gguf"), config=config,
                         cache_dir=get("cache_dir"))
