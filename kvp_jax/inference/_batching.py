"""Left-padding token sequences into fixed shapes for jit."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from kvp_jax.model import PAD_ID


def bucket_length(n: int, multiple: int = 64) -> int:
  """n rounded up to a multiple (fewer distinct shapes, fewer compiles)."""
  return max(multiple, -(-n // multiple) * multiple)


def left_pad(sequences: Sequence[Sequence[int]], length: int | None = None,
             pad_id: int = PAD_ID) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads token sequences to one length.

  Left padding makes every row end at the same column, so all rows of a batch
  write their next token to the same cache slot (see kvp_jax.model KVCache).

  Args:
    sequences: B token lists.
    length: padded length (default: the longest sequence).
  Returns:
    tokens [B, length] int32 and positions [B, length] int32, where padding
    has position -1 and a row's real tokens have positions 0..len-1.
  """
  if not sequences:
    raise ValueError("no sequences to pad")
  longest = max(len(s) for s in sequences)
  length = longest if length is None else length
  if longest > length:
    raise ValueError(f"a sequence of {longest} tokens does not fit in {length}")
  if min(len(s) for s in sequences) == 0:
    raise ValueError("empty token sequence")
  tokens = np.full((len(sequences), length), pad_id, np.int32)
  positions = np.full((len(sequences), length), -1, np.int32)
  for row, seq in enumerate(sequences):
    n = len(seq)
    tokens[row, length - n:] = np.asarray(seq, np.int32)
    positions[row, length - n:] = np.arange(n, dtype=np.int32)
  return tokens, positions
