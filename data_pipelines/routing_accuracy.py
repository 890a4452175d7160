r"""EpiCache's routing, embedding by embedding: how often a question goes to
the episode that holds its planted fact, on dev long conversations (no
cache is built).

  python -m data_pipelines.routing_accuracy --num_conversations=16 \
      --target_length=4096 --output=runs/routing/dev.jsonl

Conversations: kvp_jax.samples.long_conversations with --seed (DEV_SEED by
default: neither the committed long-conversation results' seed, 2000, nor
the calibration text's, 9000). Every embedding of --embeddings is scored
with the same episodes settings (--num_episodes, --utterances, --medoids).
Writes one JSON line per embedding to --output (written whole at the end,
atomically) and prints a markdown table.
"""

from __future__ import annotations

import json

from absl import flags

DEV_SEED = 2100

_NUM_CONVERSATIONS = flags.DEFINE_integer("num_conversations", 16,
                                          "Conversations to route.",
                                          lower_bound=1)
_TARGET_LENGTH = flags.DEFINE_integer("target_length", 4096,
                                      "Tokens per conversation.",
                                      lower_bound=256)
_NUM_FACTS = flags.DEFINE_integer("num_facts", 8, "Questions per conversation.",
                                  lower_bound=1)
_SEED = flags.DEFINE_integer("seed", DEV_SEED, "Conversation seed.")
_EMBEDDINGS = flags.DEFINE_list("embeddings", "embedding,middle,hidden",
                                "Embeddings to compare.")
_NUM_EPISODES = flags.DEFINE_integer("num_episodes", 4, "Episodes.",
                                     lower_bound=1)
_UTTERANCES = flags.DEFINE_integer("utterances", 4, "Utterances per window.",
                                   lower_bound=1)
_MEDOIDS = flags.DEFINE_integer("medoids", 2, "Medoid windows per episode.",
                                lower_bound=1)
_OUTPUT = flags.DEFINE_string("output", None, "JSONL of the results.")


def main(argv):
  from kvp_jax import _cli  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    _cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  from kvp_jax import _files  # pylint: disable=g-import-not-at-top
  from kvp_jax import eviction  # pylint: disable=g-import-not-at-top
  from kvp_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  from kvp_jax.samples import long_conversations  # pylint: disable=g-import-not-at-top
  from kvp_jax.eviction import _episodes  # pylint: disable=g-import-not-at-top
  unknown = sorted(set(_EMBEDDINGS.value) - set(_episodes.EMBEDDINGS))
  if unknown:
    _cli.fail(f"--embeddings: unknown {unknown}; known: "
              f"{', '.join(_episodes.EMBEDDINGS)}")
  if not _OUTPUT.value:
    _cli.fail("--output is required")
  _cli.quiet_library_logs()
  model = model_lib.load_pretrained()
  samples = long_conversations.generate_long_conversations(
      _NUM_CONVERSATIONS.value, _TARGET_LENGTH.value, model.tokenizer,
      _SEED.value, num_facts=_NUM_FACTS.value)
  rows = []
  for kind in _EMBEDDINGS.value:
    settings = eviction.EpisodicSettings(
        num_episodes=_NUM_EPISODES.value, utterances=_UTTERANCES.value,
        medoids=_MEDOIDS.value, embedding=kind)
    result = eviction.routing_accuracy(model, samples, settings)
    rows.append({"embedding": kind, "seed": _SEED.value,
                 "target_length": _TARGET_LENGTH.value,
                 "num_episodes": _NUM_EPISODES.value,
                 "utterances": _UTTERANCES.value, **result})
  _files.atomic_write(_OUTPUT.value,
                      "".join(json.dumps(r) + "\n" for r in rows))
  print("| embedding | questions | conversations | routed to the fact's "
        "episode |\n|---|---|---|---|")
  for r in rows:
    print(f"| {r['embedding']} | {r['questions']} | {r['conversations']} | "
          f"{r['accuracy']:.1f}% |")


if __name__ == "__main__":
  from kvp_jax import _cli  # pylint: disable=g-import-not-at-top
  _cli.run(main)
