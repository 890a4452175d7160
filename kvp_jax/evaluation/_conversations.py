"""The text of an episodic suite: its long conversations (one spec or
several, drawn on disjoint chitchat dialogues) and the calibration text a
layer profile is made on, disjoint from every evaluated conversation."""

from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

from kvp_jax.samples import dialogues
from kvp_jax.samples import long_conversations

CALIBRATION_SEED = 9000   # No suite's conversations use it (they: 2000).
FIRST_CONVERSATION = "first_conversation"


def _specs(value) -> list[dict]:
  if not value:
    return []
  return [dict(v) for v in (
      [value] if hasattr(value, "keys") else list(value))]


def generated_conversations(suite: Mapping[str, Any], tokenizer) -> list:
  """The long conversations a suite's `conversations` builds: one spec
  (num_conversations, target_length, seed, num_facts, max_new_tokens), or
  a list of them (e.g. one per length). With a list, or with
  `disjoint_from` (specs of another suite, e.g. dev's beside a test's),
  each spec draws on the chitchat dialogues that no conversation built
  before it, and none of disjoint_from's, uses: no source dialogue is
  shared within the suite or with those."""
  specs = _specs(suite.get("conversations"))
  others = _specs(suite.get("disjoint_from"))
  keys = [(s.get("target_length", 4096), s.get("seed", 2000)) for s in specs]
  if len(set(keys)) < len(keys):
    raise ValueError("conversations: two specs of one target_length and "
                     "seed would build conversations of the same ids")
  exclusive = len(specs) > 1 or bool(others)
  pool = dialogues.load_conversations() if exclusive else None
  out, used = [], set()
  for index, spec in enumerate(others + specs):
    args = (int(spec.pop("num_conversations", 1)),
            int(spec.pop("target_length", 4096)), tokenizer,
            int(spec.pop("seed", 2000)))
    built = long_conversations.generate_long_conversations(
        *args, **spec, conversations=None if pool is None else
        [c for c in pool if c.id not in used])
    used |= _sources(built)
    if index >= len(others):
      out += built
  return out


def _text_hash(text: str) -> str:
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _sources(samples) -> set[str]:
  return {str(x) for s in samples for x in s.metadata.get("sources", ())}


def calibration_prompts(tokenizer, settings: Mapping[str, Any],
                        evaluated: Sequence[Any]
                        ) -> tuple[list[list[int]], dict[str, Any]]:
  """The token lists a layer profile is made on, and their record: long
  conversations built from the chitchat dialogues none of the `evaluated`
  samples uses (settings["calibration"]: num_conversations, target_length,
  seed; defaults 1, the suite's target length, CALIBRATION_SEED).

  Raises:
    ValueError: unknown calibration fields.
  """
  spec = dict(settings.get("calibration") or {})
  suite_spec = (_specs(settings.get("conversations")) or [{}])[0]
  n = int(spec.pop("num_conversations", 1))
  length = int(spec.pop("target_length",
                        suite_spec.get("target_length", 4096)))
  seed = int(spec.pop("seed", CALIBRATION_SEED))
  if spec:
    raise ValueError(f"calibration: unknown fields {sorted(spec)}")
  used = _sources(evaluated)
  pool = [c for c in dialogues.load_conversations() if c.id not in used]
  built = long_conversations.generate_long_conversations(
      n, length, tokenizer, seed, conversations=pool)
  contexts = {s.metadata["conversation_id"]: s for s in built}
  info = {"kind": "calibration", "num_conversations": n,
          "target_length": length, "seed": seed,
          "conversations": sorted(contexts),
          "text_sha256": sorted(_text_hash(s.context)
                                for s in contexts.values()),
          "sources": sorted(_sources(contexts.values()))}
  check_disjoint(info, evaluated, "the calibration text")
  return [tokenizer.encode(s.context, add_bos=True)
          for s in contexts.values()], info


def check_disjoint(info: Mapping[str, Any] | None, evaluated: Sequence[Any],
                   where: Any) -> None:
  """Raises ValueError, naming `where`, unless the calibration record
  `info` shares no conversation id, text or source dialogue with the
  evaluated samples."""
  if not info or info.get("kind") != "calibration":
    raise ValueError(f"{where}: the profile records no calibration text "
                     f"disjoint from the evaluated conversations; delete "
                     f"it to profile again (or set the suite's calibration "
                     f"to {FIRST_CONVERSATION!r})")
  ids = {s.metadata.get("conversation_id") for s in evaluated}
  texts = {_text_hash(s.context) for s in evaluated}
  shared = (sorted(ids & set(info["conversations"])) +
            sorted(texts & set(info["text_sha256"]))[:1] +
            sorted(_sources(evaluated) & set(info["sources"]))[:3])
  if shared:
    raise ValueError(f"{where}: its calibration text overlaps the evaluated "
                     f"conversations ({', '.join(shared)}); delete it to "
                     f"profile again")
