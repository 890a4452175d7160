"""What eviction to apply: the budget, when to evict, how to share it."""

from __future__ import annotations

import dataclasses

from kvp_jax import cache as cache_lib

PROTOCOLS = ("once", "chunked", "decode")
ALLOCATIONS = ("uniform", "layer", "model")


@dataclasses.dataclass(frozen=True)
class Eviction:
  """How the cache is compressed (see the kvp_jax.eviction docstring).

  budget: tokens kept per (layer, KV head), the protected ones included;
    None keeps the full cache. A budget at or above the tokens a head holds
    evicts nothing, under every protocol and allocation: the compressed
    cache keeps every token attention can read and gives the full cache's
    logits. That includes a budget above the model's context
    (`DecoderConfig.max_context`), which is accepted, not refused: it is
    the full cache, except that its arrays are sized by the budget (a
    global layer gets budget + room slots, not prompt + room), so it costs
    more memory than budget None (tests/eviction/test_long_context.py).
    Under "chunked" a sliding-window layer may also keep tokens older than
    its window, which no query reads.
  protocol: "once", "chunked" or "decode".
  allocation: "uniform", "layer" or "model".
  chunk_size: tokens per prefill chunk (protocol "chunked").
  decode_interval: tokens appended between evictions (protocol "decode").
  protected: the always-kept sinks and recent tokens; take it from the
    policy artifact or the config (`cache.Protected.from_config`).
  """
  budget: int | None
  protocol: str = "once"
  allocation: str = "uniform"
  chunk_size: int = 512
  decode_interval: int = 32
  protected: cache_lib.Protected = cache_lib.Protected()

  def __post_init__(self):
    if self.protocol not in PROTOCOLS:
      raise ValueError(f"unknown eviction protocol {self.protocol!r}; known: "
                       f"{PROTOCOLS}")
    if self.allocation not in ALLOCATIONS:
      raise ValueError(f"unknown budget allocation {self.allocation!r}; "
                       f"known: {ALLOCATIONS}")
    if not isinstance(self.protected, cache_lib.Protected):
      raise ValueError(f"protected must be a cache.Protected, got "
                       f"{self.protected!r}")
    if self.budget is not None:
      cache_lib.check_budget(self.budget, self.protected)
    if self.protocol == "decode" and self.allocation != "uniform":
      raise ValueError("eviction during decoding keeps a uniform budget; use "
                       "allocation='uniform' with protocol='decode'")
    for name in ("chunk_size", "decode_interval"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")

  @property
  def full(self) -> bool:
    return self.budget is None

  @property
  def evicts_while_decoding(self) -> bool:
    return self.protocol == "decode" and not self.full

  @property
  def evicts_while_prefilling(self) -> bool:
    return self.protocol == "chunked" and not self.full
