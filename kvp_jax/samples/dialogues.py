"""Multi-turn dialogues packed into perplexity samples of a target length.

The conversations are the human chit-chat dialogues of the
`chitchat-dataset` package (MIT; 7,168 conversations, of which the ~4,000
with a reply are used), shipped with it, so nothing is downloaded. Each is
written as a transcript, one turn a line, speakers lettered by order
of appearance:

  A: Hello How are you doing today?
  B: whats up MD im doing good how are you doing?

A sample packs whole conversations (in an order shuffled by the seed,
separated by a blank line) up to the target length, then splits them before
a turn: the context holds the earlier turns, the continuation the next
turn(s), about `continuation_fraction` of the tokens, preferably continuing
the conversation the context ends in.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Sequence

from kvp_jax.samples import documents
from kvp_jax.samples import schema as samples_lib

TASK = "dialogues"
_LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclasses.dataclass(frozen=True)
class Conversation:
  """One dialogue: its dataset id and its (speaker letter, text) turns."""
  id: str
  turns: tuple[tuple[str, str], ...]


def _conversation(conversation_id: str, record: dict) -> Conversation:
  labels: dict[str, str] = {}
  turns: list[tuple[str, str]] = []
  for turn in record["messages"]:
    text = " ".join(" ".join(m["text"].split()) for m in turn).strip()
    if not text:
      continue
    sender = turn[0]["sender"]
    speaker = labels.setdefault(sender, _LABELS[len(labels) % len(_LABELS)])
    if turns and turns[-1][0] == speaker:
      turns[-1] = (speaker, f"{turns[-1][1]} {text}")
    else:
      turns.append((speaker, text))
  return Conversation(conversation_id, tuple(turns))


def load_conversations() -> list[Conversation]:
  """The chitchat conversations with two turns or more, sorted by id."""
  import chitchat_dataset  # pylint: disable=import-outside-toplevel
  data = chitchat_dataset.Dataset()
  conversations = (_conversation(key, data[key]) for key in sorted(data))
  return [c for c in conversations if len(c.turns) >= 2]


def transcript_lines(conversation: Conversation) -> list[str]:
  """The conversation's turns as "A: text" lines, each ending in a newline."""
  return [f"{speaker}: {text}\n" for speaker, text in conversation.turns]


def generate_dialogues(num_samples: int, target_length: int,
                       tokenizer: samples_lib.TokenizerLike, seed: int, *,
                       continuation_fraction: float = (
                           documents.DEFAULT_CONTINUATION_FRACTION),
                       conversations: Sequence[Conversation] | None = None
                       ) -> list[samples_lib.Sample]:
  """Dialogue perplexity samples of about `target_length` tokens.

  Conversations are taken in an order shuffled by `seed`, each sample
  starting after the last conversation the previous one opened (no
  conversation twice in a sample, none reused before all were used).

  Args:
    num_samples: samples to make.
    target_length: bound on BOS + context tokens + continuation tokens.
    tokenizer: anything with `encode` (and optionally `count`).
    seed: shuffles the conversation order.
    continuation_fraction: share of the tokens in the continuation.
    conversations: defaults to load_conversations().
  """
  if conversations is None:
    conversations = load_conversations()
  if not conversations:
    return []
  order = list(range(len(conversations)))
  random.Random(f"{TASK}|{seed}").shuffle(order)
  out = []
  cursor = 0
  for index in range(num_samples):
    pieces, owners, cursor = documents.gather_pieces(
        lambda i: transcript_lines(conversations[i]), order, cursor,
        target_length)
    # Split before a turn that continues the turn before it.
    starts = [i > 0 and owners[i] >= 0 and owners[i - 1] == owners[i]
              for i in range(len(pieces))]
    packed = documents.pack_continuation(pieces, starts, target_length,
                                         tokenizer, continuation_fraction)
    if packed is None:
      continue
    used = list(dict.fromkeys(
        o for o in owners[:packed.num_pieces] if o >= 0))
    out.append(samples_lib.Sample(
        id=f"{TASK}-{target_length}-{seed}-{index}", task=TASK,
        context=packed.context, question="", answer_prefix="", answers=[],
        max_new_tokens=packed.continuation_tokens,
        continuation=packed.continuation,
        metadata={"metric": documents.METRIC, "target_length": target_length,
                  "num_tokens": packed.num_tokens,
                  "conversations": [conversations[i].id for i in used]}))
  return out
