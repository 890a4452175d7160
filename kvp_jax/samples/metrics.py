"""RULER's scores: how many reference strings a generated answer contains.

string_match_all: the fraction of references found in the prediction
  (case-insensitive containment); RULER scores every synthetic task with it.
string_match_part: 1 if any reference is found (RULER's QA metric).

Scores are in [0, 1] (RULER reports them times 100). Continuation samples
(dialogues, documents) are scored by perplexity elsewhere;
`scoring.metric_of` names "perplexity" for them.
"""

from __future__ import annotations

import re
import types
from typing import Callable, Mapping, Sequence

STRING_MATCH_ALL = "string_match_all"
STRING_MATCH_PART = "string_match_part"
PERPLEXITY = "perplexity"

_CONTROL = re.compile(r"[\x00-\x1f]")


def postprocess_prediction(text: str) -> str:
  """RULER's clean-up: control characters become newlines, then strip."""
  return _CONTROL.sub("\n", text.strip()).strip()


def _check(references: Sequence[str]) -> None:
  if isinstance(references, str) or not references:
    raise ValueError(f"references must be a non-empty list of strings, got "
                     f"{references!r}")


def string_match_all(prediction: str, references: Sequence[str]) -> float:
  """Fraction of references contained in the prediction, ignoring case."""
  _check(references)
  prediction = prediction.lower()
  return sum(r.lower() in prediction for r in references) / len(references)


def string_match_part(prediction: str, references: Sequence[str]) -> float:
  """1.0 if any reference is contained in the prediction, ignoring case."""
  _check(references)
  prediction = prediction.lower()
  return float(any(r.lower() in prediction for r in references))


METRICS: Mapping[str, Callable[[str, Sequence[str]], float]] = (
    types.MappingProxyType({
        STRING_MATCH_ALL: string_match_all,
        STRING_MATCH_PART: string_match_part,
    }))
