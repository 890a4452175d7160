"""Long-document samples for perplexity, and the packing they share.

Sources, all offline:
  "pydoc":      the Python documentation topics shipped with the interpreter
                (`pydoc_data.topics`, 79 documents, ~110k Gemma tokens).
  "python_doc": the reST sources of Debian's python3.11-doc package
                (PYTHON_DOC_ROOT); an empty list when it is not installed.
  a directory:  every .txt/.md/.rst file under it, recursively.

A sample packs documents (in a seeded order, separated by a blank line) into
a text of about `target_length` tokens, then splits it at a line start: the
context is the first part, the continuation (about `continuation_fraction`
of the tokens) is the reference text whose likelihood is scored. BOS +
context tokens + continuation tokens never exceed the target length.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
from pathlib import Path
from typing import Callable, Sequence

from kvp_jax.samples import schema as samples_lib

PYTHON_DOC_ROOT = Path("/usr/share/doc/python3.11/html/_sources")
TEXT_SUFFIXES = (".txt", ".md", ".rst")
PYDOC = "pydoc"
PYTHON_DOC = "python_doc"
METRIC = "perplexity"
DEFAULT_CONTINUATION_FRACTION = 0.25
# Pieces are gathered until their characters exceed this many per target
# token, which outruns any tokenizer on natural text.
CHARS_PER_TOKEN_BOUND = 8
_MAX_PIECE_CHARS = 400


@dataclasses.dataclass(frozen=True)
class Document:
  """A named text."""
  name: str
  text: str


@dataclasses.dataclass(frozen=True)
class Packed:
  """A text split into a context and its continuation.

  Attributes:
    context: the first part; it ends at a line end.
    continuation: the rest, starting at a line start.
    context_tokens: tokens of the context (no BOS).
    continuation_tokens: tokens of the continuation.
    num_pieces: how many pieces the two hold together.
  """
  context: str
  continuation: str
  context_tokens: int
  continuation_tokens: int
  num_pieces: int

  @property
  def num_tokens(self) -> int:
    """BOS + context + continuation tokens."""
    return samples_lib.BOS_TOKENS + self.context_tokens + (
        self.continuation_tokens)


def _clean(text: str) -> str:
  return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def pydoc_documents() -> list[Document]:
  """The `pydoc_data.topics` documents, sorted by topic name."""
  from pydoc_data import topics  # pylint: disable=import-outside-toplevel
  return [Document(name, _clean(topics.topics[name]))
          for name in sorted(topics.topics) if _clean(topics.topics[name])]


def directory_documents(root: str | os.PathLike[str],
                        suffixes: Sequence[str] = TEXT_SUFFIXES
                        ) -> list[Document]:
  """Every file under `root` whose name ends with one of `suffixes`.

  Names are paths relative to `root`, sorted; empty files are skipped.

  Raises:
    FileNotFoundError: `root` is not a directory.
  """
  root = Path(root)
  if not root.is_dir():
    raise FileNotFoundError(f"no such directory: {root}")
  documents = []
  for path in sorted(root.rglob("*")):
    if path.is_file() and path.name.endswith(tuple(suffixes)):
      text = _clean(path.read_text(encoding="utf-8", errors="replace"))
      if text:
        documents.append(Document(path.relative_to(root).as_posix(), text))
  return documents


def python_doc_documents(root: str | os.PathLike[str] = PYTHON_DOC_ROOT
                         ) -> list[Document]:
  """The python3.11-doc reST sources, or [] when the package is absent."""
  if not Path(root).is_dir():
    return []
  return directory_documents(root)


def load_documents(source: str) -> list[Document]:
  """Documents of a source: "pydoc", "python_doc" or a directory path."""
  if source == PYDOC:
    return pydoc_documents()
  if source == PYTHON_DOC:
    return python_doc_documents()
  return directory_documents(source)


def source_name(source: str) -> str:
  """A short name for a source, used in task names and file names."""
  if source in (PYDOC, PYTHON_DOC):
    return source
  name = Path(source).resolve().name or "root"
  return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "dir"


def text_pieces(text: str, max_chars: int = _MAX_PIECE_CHARS) -> list[str]:
  """Lines of `text` with their line ends; a line longer than `max_chars`
  is cut after spaces into several pieces. "".join(pieces) == text."""
  pieces = []
  for line in text.splitlines(keepends=True):
    while len(line) > max_chars:
      cut = line.rfind(" ", 0, max_chars) + 1
      if cut <= 0:
        cut = max_chars
      pieces.append(line[:cut])
      line = line[cut:]
    if line:
      pieces.append(line)
  return pieces


def line_starts(pieces: Sequence[str]) -> list[bool]:
  """Whether each piece begins a non-blank line (a clean place to split)."""
  return [bool(piece.strip()) and (i == 0 or pieces[i - 1].endswith("\n"))
          for i, piece in enumerate(pieces)]


def gather_pieces(item_pieces: Callable[[int], list[str]],
                  order: Sequence[int], cursor: int, target_length: int
                  ) -> tuple[list[str], list[int], int]:
  """Pieces of the items order[cursor], order[cursor + 1], ... (wrapping
  around, each item at most once), a blank line between items, until they
  hold CHARS_PER_TOKEN_BOUND characters per target token.

  Returns:
    the pieces, the item of each piece (-1 for separators), the next cursor.
  """
  pieces: list[str] = []
  owners: list[int] = []
  chars = 0
  for step in range(len(order)):
    if chars >= CHARS_PER_TOKEN_BOUND * target_length:
      break
    item = order[(cursor + step) % len(order)]
    if pieces:
      pieces.append("\n")
      owners.append(-1)
    new = item_pieces(item)
    chars += sum(map(len, new))
    pieces.extend(new)
    owners.extend([item] * len(new))
  else:
    step = len(order)
  return pieces, owners, cursor + step


def _piece_tokens(tokenizer: samples_lib.TokenizerLike,
                  pieces: Sequence[str]) -> list[int]:
  batch = getattr(tokenizer, "encode_batch", None)
  if batch is not None:
    return [len(ids) for ids in batch(list(pieces))]
  return [samples_lib.count_tokens(tokenizer, piece) for piece in pieces]


def pack_continuation(pieces: Sequence[str], starts: Sequence[bool],
                      target_length: int,
                      tokenizer: samples_lib.TokenizerLike,
                      continuation_fraction: float
                      ) -> Packed | None:
  """Fits pieces into `target_length` tokens and splits them in two.

  Takes the longest prefix of `pieces` whose text (with BOS) fits the target,
  then splits it before a piece marked in `starts` (before any piece when no
  marked one qualifies) so that the continuation holds about
  `continuation_fraction` of the tokens. Returns None when fewer than two
  pieces fit.
  """
  if not 0 < continuation_fraction < 1:
    raise ValueError(f"continuation_fraction must be in (0, 1), got "
                     f"{continuation_fraction}")
  count = lambda text: samples_lib.count_tokens(tokenizer, text)
  budget = target_length - samples_lib.BOS_TOKENS
  if count(pieces[0]) > budget:
    return None
  n = samples_lib.fit_count(lambda k: count("".join(pieces[:k]).rstrip()),
                            budget, len(pieces))
  if n < 2:
    return None
  tokens = _piece_tokens(tokenizer, pieces[:n])
  total = sum(tokens)
  wanted = continuation_fraction * total
  candidates = [s for s in range(1, n) if starts[s]] or list(range(1, n))
  tail = {s: sum(tokens[s:n]) for s in candidates}
  split = min(candidates, key=lambda s: (abs(tail[s] - wanted), s))
  context = "".join(pieces[:split])
  context_tokens = count(context)
  while True:  # separate tokenization may differ from the joined text's
    continuation = "".join(pieces[split:n]).rstrip()
    continuation_tokens = count(continuation)
    fits = (samples_lib.BOS_TOKENS + context_tokens + continuation_tokens
            <= target_length)
    if fits or n == split + 1:
      break
    n -= 1
  if not fits or not continuation:
    return None
  return Packed(context=context, continuation=continuation,
                context_tokens=context_tokens,
                continuation_tokens=continuation_tokens, num_pieces=n)


def generate_documents(documents: Sequence[Document], num_samples: int,
                       target_length: int,
                       tokenizer: samples_lib.TokenizerLike, seed: int, *,
                       task: str = "documents",
                       continuation_fraction: float = (
                           DEFAULT_CONTINUATION_FRACTION)
                       ) -> list[samples_lib.Sample]:
  """Perplexity samples of about `target_length` tokens from `documents`.

  Documents are taken in an order shuffled by `seed`; each sample starts
  with the document after the last one the previous sample opened, and packs
  the following ones until the target is reached (no document twice in one
  sample). A sample whose documents cannot fill two pieces is dropped, so
  fewer than `num_samples` may come back (none for no documents).
  """
  if not documents:
    return []
  order = list(range(len(documents)))
  random.Random(f"{task}|{seed}").shuffle(order)
  out = []
  cursor = 0
  for index in range(num_samples):
    pieces, owners, cursor = gather_pieces(
        lambda i: text_pieces(documents[i].text + "\n"), order, cursor,
        target_length)
    packed = pack_continuation(pieces, line_starts(pieces), target_length,
                               tokenizer, continuation_fraction)
    if packed is None:
      continue
    used = list(dict.fromkeys(o for o in owners[:packed.num_pieces] if o >= 0))
    out.append(samples_lib.Sample(
        id=f"{task}-{target_length}-{seed}-{index}", task=task,
        context=packed.context, question="", answer_prefix="", answers=[],
        max_new_tokens=packed.continuation_tokens,
        continuation=packed.continuation,
        metadata={"metric": METRIC, "target_length": target_length,
                  "num_tokens": packed.num_tokens,
                  "documents": [documents[i].name for i in used]}))
  return out
