"""Haystacks for the needle tasks: repeated noise, or essay sentences.

The noise haystack repeats one line of trivially predictable sentences. The
essay haystack is the prose of the Python documentation topics shipped with
the interpreter (`pydoc_data.topics`): topics in sorted order, code blocks,
grammar rules and headings dropped, whitespace collapsed, split into
sentences. Both are deterministic; a haystack longer than the essay cycles
through it again.
"""

from __future__ import annotations

import functools
import re

from kvp_jax.samples import documents

NOISE = ("The grass is green. The sky is blue. The sun is yellow. "
         "Here we go. There and back again.")

_UNDERLINE = re.compile(r"^\s*([*=\-~^\"'`#+])\1{2,}\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_MIN_SENTENCE_CHARS = 20
_MAX_SENTENCE_CHARS = 400


def noise_units(n: int) -> list[str]:
  """n copies of the noise line."""
  return [NOISE] * n


def _is_prose(paragraph: str) -> bool:
  """Flush-left text with no heading underline, grammar rule or table."""
  lines = paragraph.split("\n")
  if any(line[:1].isspace() or _UNDERLINE.match(line) for line in lines):
    return False
  if "::=" in paragraph or "+--" in paragraph or "|" in paragraph:
    return False
  return paragraph.rstrip().endswith((".", ":", "?", "!"))


def prose_sentences(text: str) -> list[str]:
  """Sentences (20 to 400 characters) of the prose paragraphs of a
  plain-text document."""
  out = []
  for paragraph in re.split(r"\n\s*\n", text):
    if not paragraph.strip() or not _is_prose(paragraph):
      continue
    flat = " ".join(paragraph.split())
    out.extend(s for s in _SENTENCE_END.split(flat)
               if _MIN_SENTENCE_CHARS <= len(s) <= _MAX_SENTENCE_CHARS)
  return out


@functools.lru_cache(maxsize=1)
def essay_sentences() -> tuple[str, ...]:
  """All essay sentences, in document order (cached; immutable)."""
  return tuple(sentence for doc in documents.pydoc_documents()
               for sentence in prose_sentences(doc.text))


def essay_units(n: int, start: int = 0) -> list[str]:
  """n essay sentences from `start` on, cycling through the essay."""
  sentences = essay_sentences()
  return [sentences[(start + i) % len(sentences)] for i in range(n)]
