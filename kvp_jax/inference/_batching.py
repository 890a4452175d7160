"""Left-padding token sequences into fixed shapes for jit."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from kvp_jax.model import PAD_ID


def check_context(config, lengths: Sequence[int] | np.ndarray,
                  to_come: int | Sequence[int] | np.ndarray = 0,
                  what: str = "to generate") -> None:
  """Refuses sequences longer than the model's context, before any compile.

  The one rule (and message) of every inference entry: a row's prompt and
  the tokens still to come (generated or scored) must fit in
  `config.max_context` positions. Padding to a bucket does not count.

  Args:
    config: the DecoderConfig (its max_context and name).
    lengths: [B] prompt lengths (tokens, BOS included).
    to_come: tokens each row appends afterwards: one int for all rows, or
      [B] per row (e.g. continuation lengths).
    what: how the message names them ("to generate", "to score").
  Raises:
    ValueError: "prompt of N tokens (+ M to generate) exceeds the model's
      context of C tokens (name)", for the row that exceeds it most.
  """
  limit = getattr(config, "max_context", None)
  lengths = np.asarray(lengths, np.int64).reshape(-1)
  if limit is None or not lengths.size:
    return
  extra = np.broadcast_to(np.asarray(to_come, np.int64), lengths.shape)
  total = lengths + extra
  row = int(np.argmax(total))
  if total[row] <= limit:
    return
  n, m = int(lengths[row]), int(extra[row])
  more = f" (+ {m} {what})" if m else ""
  raise ValueError(f"prompt of {n} tokens{more} exceeds the model's context "
                   f"of {limit} tokens ({config.name})")


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


class PaddedBatch(NamedTuple):
  """Prompts left-padded to a bucketed length.

  tokens, positions: [B, T] int32 (padding: PAD_ID at position -1).
  lengths: [B] int32, each prompt's own length.
  """
  tokens: np.ndarray
  positions: np.ndarray
  lengths: np.ndarray


def pad_batch(prompts: Sequence[Sequence[int]], pad_multiple: int = 64,
              chunk: int = 1) -> PaddedBatch:
  """Left-pads prompts to their bucket length (a multiple of pad_multiple,
  then rounded up to a multiple of `chunk`, for a chunked prefill)."""
  if not prompts:
    raise ValueError("no prompts to pad")
  t = bucket_length(max(map(len, prompts)), pad_multiple)
  t = -(-t // chunk) * chunk
  tokens, positions = left_pad(prompts, t)
  return PaddedBatch(tokens, positions,
                     np.asarray([len(p) for p in prompts], np.int32))
