"""The Gemma 3 tokenizer, rebuilt from the vocabulary stored in a GGUF file.

The GGUF holds every piece, its score and its type; sentencepiece only needs
those plus the right trainer and normalizer settings to reproduce Gemma's BPE
tokenizer exactly (byte fallback, digits split, no normalisation, no dummy
prefix, whitespace kept as U+2581).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

PAD_ID = 0
EOS_ID = 1
BOS_ID = 2
UNK_ID = 3

_SPM_UNKNOWN = 2
_SPM_USER_DEFINED = 4
_SPACE_MARK = "\u2581"


def build_model_proto(tokens: Sequence[str], scores: Sequence[float],
                      token_types: Sequence[int]) -> bytes:
  """Serialises a sentencepiece ModelProto from a GGUF vocabulary.

  GGUF token types use sentencepiece's numbering (1 normal, 3 control,
  4 user-defined, 6 byte); the unknown piece (id 3) is marked UNKNOWN, and
  user-defined pieces get their spaces turned back into U+2581 as
  sentencepiece stores them.
  """
  if not len(tokens) == len(scores) == len(token_types):
    raise ValueError(
        f"vocabulary arrays disagree in length: {len(tokens)} tokens, "
        f"{len(scores)} scores, {len(token_types)} types")
  proto = sentencepiece_model_pb2.ModelProto()
  for i, (piece, score, kind) in enumerate(zip(tokens, scores, token_types)):
    kind = int(kind)
    if i == UNK_ID:
      kind = _SPM_UNKNOWN
    if kind == _SPM_USER_DEFINED:
      piece = piece.replace(" ", _SPACE_MARK)
    entry = proto.pieces.add()
    entry.piece = piece
    entry.score = float(score)
    entry.type = kind
  spec = proto.trainer_spec
  spec.model_type = sentencepiece_model_pb2.TrainerSpec.BPE
  spec.vocab_size = len(tokens)
  spec.byte_fallback = True
  spec.split_digits = True
  spec.allow_whitespace_only_pieces = True
  spec.split_by_whitespace = False
  spec.treat_whitespace_as_suffix = False
  spec.pad_id, spec.eos_id, spec.bos_id, spec.unk_id = (PAD_ID, EOS_ID, BOS_ID,
                                                         UNK_ID)
  spec.pad_piece = tokens[PAD_ID]
  spec.eos_piece = tokens[EOS_ID]
  spec.bos_piece = tokens[BOS_ID]
  spec.unk_piece = tokens[UNK_ID]
  norm = proto.normalizer_spec
  norm.name = "identity"
  norm.add_dummy_prefix = False
  norm.remove_extra_whitespaces = False
  norm.escape_whitespaces = True
  proto.denormalizer_spec.name = "identity"
  proto.denormalizer_spec.add_dummy_prefix = False
  proto.denormalizer_spec.remove_extra_whitespaces = False
  return proto.SerializeToString()


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  """Gemma tokenizer with BOS/EOS handling and batched encode/decode.

  Build it with `Tokenizer.from_proto(bytes)`; `kvp_jax.model.load_tokenizer`
  builds one from a GGUF file and caches the proto beside the checkpoint.
  """
  processor: spm.SentencePieceProcessor
  proto: bytes

  @classmethod
  def from_proto(cls, proto: bytes) -> "Tokenizer":
    processor = spm.SentencePieceProcessor()
    processor.LoadFromSerializedProto(proto)
    return cls(processor=processor, proto=proto)

  @property
  def vocab_size(self) -> int:
    return self.processor.GetPieceSize()

  @property
  def bos_id(self) -> int:
    return BOS_ID

  @property
  def eos_id(self) -> int:
    return EOS_ID

  @property
  def pad_id(self) -> int:
    return PAD_ID

  def encode(self, text: str, *, add_bos: bool = False,
             add_eos: bool = False) -> list[int]:
    """Token ids of one string."""
    ids = self.processor.EncodeAsIds(text)
    return ([BOS_ID] if add_bos else []) + ids + ([EOS_ID] if add_eos else [])

  def encode_batch(self, texts: Sequence[str], *, add_bos: bool = False,
                   add_eos: bool = False) -> list[list[int]]:
    """Token ids of several strings (sentencepiece encodes them in C++)."""
    batch = self.processor.EncodeAsIds(list(texts))
    return [([BOS_ID] if add_bos else []) + ids + ([EOS_ID] if add_eos else [])
            for ids in batch]

  def decode(self, ids: Sequence[int]) -> str:
    """Text of one id sequence; BOS, EOS and PAD are dropped."""
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    return self.processor.DecodeIds(
        [i for i in ids if i not in (BOS_ID, EOS_ID, PAD_ID)])

  def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
    return [self.decode(ids) for ids in batch]

  def count(self, text: str) -> int:
    """Number of tokens of `text` (without BOS)."""
    return len(self.processor.EncodeAsIds(text))
