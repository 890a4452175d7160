"""Architecture of a Gemma-3-style decoder, in one frozen dataclass.

Every architectural choice the decoder makes is a field here, so a config is
the whole description of a model's shape and numerics; `fingerprint()` hashes
it for trace stores and exported policies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import jax.numpy as jnp

LOCAL = "local"
GLOBAL = "global"


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Shape and numerics of a Gemma-3-style decoder.

  Attributes:
    name: preset name, recorded in fingerprints.
    vocab_size: rows of the (tied) embedding.
    width: model width D.
    num_layers: L.
    num_heads: query heads N.
    num_kv_heads: key/value heads K (N % K == 0; G = N // K query heads share
      one KV head).
    head_dim: H.
    ffw_hidden: hidden width of the gated feed-forward block.
    attention_pattern: per-layer attention kinds, repeated cyclically over the
      layers: "local" (sliding window) or "global".
    sliding_window: window of local layers; a key j is visible from query i
      when 0 <= i - j < sliding_window (positions, not slots).
    local_rope_base / global_rope_base: RoPE wavelengths by layer kind.
    query_scale: multiplies queries before the dot product.
    use_qk_norm: RMS-normalise queries and keys per head (Gemma 3).
    attn_logit_softcap / final_logit_softcap: tanh soft-capping, or None.
    tied_embedding: the output projection is the input embedding.
    rms_eps: epsilon of every RMSNorm.
    param_dtype / compute_dtype: dtype names ("float32", "bfloat16").
    attention_query_block: chunks of more queries than this are attended a
      block at a time, bounding the logits' memory (not the result).
    max_context: the most tokens (positions 0 .. max_context - 1) a sequence
      may hold, prompt and generated tokens together: the context the model
      was trained for (Gemma 3 270M: 32768, its GGUF's
      `gemma3.context_length`). Inference refuses longer inputs with a
      ValueError naming it (kvp_jax.inference.check_context). Not part of
      the architecture fingerprint (it changes no weight or output).
  """
  name: str
  vocab_size: int
  width: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  ffw_hidden: int
  attention_pattern: tuple[str, ...] = (LOCAL,) * 5 + (GLOBAL,)
  sliding_window: int | None = 512
  local_rope_base: float = 10_000.0
  global_rope_base: float = 1_000_000.0
  query_scale: float = 256 ** -0.5
  use_qk_norm: bool = True
  attn_logit_softcap: float | None = None
  final_logit_softcap: float | None = None
  tied_embedding: bool = True
  rms_eps: float = 1e-6
  param_dtype: str = "float32"
  compute_dtype: str = "float32"
  attention_query_block: int | None = 1024
  max_context: int = 32_768

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of "
                       f"num_kv_heads={self.num_kv_heads}")
    bad = set(self.attention_pattern) - {LOCAL, GLOBAL}
    if bad or not self.attention_pattern:
      raise ValueError(f"attention_pattern must hold 'local'/'global', got "
                       f"{self.attention_pattern}")
    if LOCAL in self.attention_pattern and not self.sliding_window:
      raise ValueError("local layers need a positive sliding_window")
    if not self.tied_embedding:
      raise NotImplementedError("only tied embeddings are implemented")
    for field in ("param_dtype", "compute_dtype"):
      jnp.dtype(getattr(self, field))  # Raises on an unknown dtype name.
    if (isinstance(self.max_context, bool) or
        not isinstance(self.max_context, int) or self.max_context < 1):
      raise ValueError(f"max_context must be a positive int, got "
                       f"{self.max_context!r}")

  @property
  def group_size(self) -> int:
    """Query heads per KV head (G)."""
    return self.num_heads // self.num_kv_heads

  def layer_kind(self, layer: int) -> str:
    return self.attention_pattern[layer % len(self.attention_pattern)]

  def layer_window(self, layer: int) -> int | None:
    """Sliding window of a layer, or None for a global layer."""
    return self.sliding_window if self.layer_kind(layer) == LOCAL else None

  def layer_rope_base(self, layer: int) -> float:
    if self.layer_kind(layer) == LOCAL:
      return self.local_rope_base
    return self.global_rope_base

  @property
  def num_agents(self) -> int:
    """One eviction agent per (layer, KV head)."""
    return self.num_layers * self.num_kv_heads

  def replace(self, **changes: Any) -> "DecoderConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["attention_pattern"] = list(self.attention_pattern)
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "DecoderConfig":
    d = dict(d)
    d["attention_pattern"] = tuple(d["attention_pattern"])
    return cls(**d)

  def architecture_fingerprint(self) -> str:
    """Hash of everything that shapes the model's function (not dtypes, nor
    the context limit: fingerprints recorded before it existed still hold)."""
    d = self.to_dict()
    for k in ("name", "param_dtype", "compute_dtype", "attention_query_block",
              "max_context"):
      d.pop(k)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def gemma3_270m(**overrides: Any) -> DecoderConfig:
  """Gemma 3 270M: 18 layers (5 local : 1 global), width 640, 4 heads, 1 KV."""
  config = DecoderConfig(
      name="gemma3_270m",
      vocab_size=262_144,
      width=640,
      num_layers=18,
      num_heads=4,
      num_kv_heads=1,
      head_dim=256,
      ffw_hidden=2048,
      attention_pattern=(LOCAL,) * 5 + (GLOBAL,),
      sliding_window=512,
      local_rope_base=10_000.0,
      global_rope_base=1_000_000.0,
      query_scale=256 ** -0.5,
      max_context=32_768,  # The GGUF's gemma3.context_length.
  )
  return config.replace(**overrides)


def tiny(**overrides: Any) -> DecoderConfig:
  """A few-layer model for tests: GQA (4 query heads on 2 KV heads), a short
  window so sequences of a few dozen tokens cross it, both layer kinds.
  Its context limit is Gemma 3's (32768), so long-context tests run on it;
  tests of the limit itself override max_context."""
  config = DecoderConfig(
      name="tiny",
      vocab_size=97,
      width=32,
      num_layers=3,
      num_heads=4,
      num_kv_heads=2,
      head_dim=16,
      ffw_hidden=48,
      attention_pattern=(LOCAL, LOCAL, GLOBAL),
      sliding_window=8,
      query_scale=16 ** -0.5,
      max_context=32_768,
  )
  return config.replace(**overrides)


def tiny_gemma_vocab(**overrides: Any) -> DecoderConfig:
  """`tiny` over Gemma's 262k vocabulary, so the real tokenizer drives it
  (end-to-end tests of pipelines that start from text)."""
  return tiny(name="tiny_gemma_vocab", vocab_size=gemma3_270m().vocab_size,
              **overrides)


PRESETS = {"gemma3_270m": gemma3_270m, "tiny": tiny,
           "tiny_gemma_vocab": tiny_gemma_vocab}


def get_config(name: str, **overrides: Any) -> DecoderConfig:
  """A named preset, with field overrides."""
  if name not in PRESETS:
    raise ValueError(f"unknown model config {name!r}; known: {sorted(PRESETS)}")
  return PRESETS[name](**overrides)
