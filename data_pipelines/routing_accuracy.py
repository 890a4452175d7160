r"""EpiCache's routing, embedding by embedding: how often a question goes to
the episode that holds its planted fact, on dev long conversations (no
cache is built).

  python -m data_pipelines.routing_accuracy --num_conversations=16 \
      --target_length=4096 --output=runs/routing/dev.jsonl

Conversations: kvp_jax.samples.long_conversations with --seed (DEV_SEED by
default: neither the committed long-conversation results' seed, 2000, nor
the calibration text's, 9000). Every embedding of --embeddings is scored
with every routing of --route_by (to the nearest episode centroid, the
paper's; to its medoids; to the episode of the nearest window), with the
same episodes settings (--num_episodes, --utterances, --medoids),
and each after the first is compared with the first on the same questions:
the difference in routing accuracy (points) with a paired 95% bootstrap
interval that resamples conversations and its p-value, Holm-adjusted over
the comparisons printed. Writes one JSON line per (embedding, routing),
its per-question hits included, to --output (written whole at the end,
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
_EMBEDDINGS = flags.DEFINE_list("embeddings", "embedding,middle,hidden,tfidf",
                                "Embeddings to compare.")
_ROUTE_BY = flags.DEFINE_list("route_by", "centroid", "Routings to compare "
                              "(centroid, medoid, window), each with every "
                              "embedding.")
_NUM_EPISODES = flags.DEFINE_integer("num_episodes", 4, "Episodes.",
                                     lower_bound=1)
_UTTERANCES = flags.DEFINE_integer("utterances", 4, "Utterances per window.",
                                   lower_bound=1)
_MEDOIDS = flags.DEFINE_integer("medoids", 2, "Medoid windows per episode.",
                                lower_bound=1)
_OUTPUT = flags.DEFINE_string("output", None, "JSONL of the results.")


def _p(p: float) -> str:
  """A Holm-adjusted bootstrap p-value; 0: no resample of the 10,000
  crossed zero (p below about 6e-4 times the comparisons)."""
  if not p == p:                      # NaN: fewer than 2 conversations.
    return "n/a"
  return f"{p:.3g}" if p > 0 else "0 (no resample crossed 0)"


def _name(row) -> str:
  return f"{row['embedding']}, {row['route_by']}"


def main(argv):
  from kvp_jax import _cli  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    _cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  from kvp_jax import _files  # pylint: disable=g-import-not-at-top
  from kvp_jax import eviction  # pylint: disable=g-import-not-at-top
  from kvp_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  from kvp_jax.samples import long_conversations  # pylint: disable=g-import-not-at-top
  from kvp_jax.eviction import _episodes  # pylint: disable=g-import-not-at-top
  if not _EMBEDDINGS.value or not _ROUTE_BY.value:
    _cli.fail("--embeddings and --route_by each need at least one value")
  unknown = sorted(set(_EMBEDDINGS.value) - set(_episodes.EMBEDDINGS))
  if unknown:
    _cli.fail(f"--embeddings: unknown {unknown}; known: "
              f"{', '.join(_episodes.EMBEDDINGS)}")
  unknown = sorted(set(_ROUTE_BY.value) - set(_episodes.ROUTE_BY))
  if unknown:
    _cli.fail(f"--route_by: unknown {unknown}; known: "
              f"{', '.join(_episodes.ROUTE_BY)}")
  if not _OUTPUT.value:
    _cli.fail("--output is required")
  _cli.quiet_library_logs()
  model = model_lib.load_pretrained()
  samples = long_conversations.generate_long_conversations(
      _NUM_CONVERSATIONS.value, _TARGET_LENGTH.value, model.tokenizer,
      _SEED.value, num_facts=_NUM_FACTS.value)
  from kvp_jax.evaluation import _bootstrap  # pylint: disable=g-import-not-at-top
  from kvp_jax.evaluation import _multiplicity  # pylint: disable=g-import-not-at-top
  rows = []
  for kind in _EMBEDDINGS.value:
    settings = eviction.EpisodicSettings(
        num_episodes=_NUM_EPISODES.value, utterances=_UTTERANCES.value,
        medoids=_MEDOIDS.value, embedding=kind)
    results = eviction.routing_accuracies(model, samples, settings,
                                          _ROUTE_BY.value)
    rows += [{"embedding": kind, "route_by": by, "seed": _SEED.value,
              "target_length": _TARGET_LENGTH.value,
              "num_episodes": _NUM_EPISODES.value,
              "utterances": _UTTERANCES.value, "medoids": _MEDOIDS.value,
              "kmeans_seed": settings.seed, **results[by]}
             for by in _ROUTE_BY.value]
  first = rows[0]
  base = {h["sample"]: h["hit"] for h in first["hits"]}
  for r in rows[1:]:
    d = _bootstrap.paired_cluster_bootstrap(
        [100.0 * h["hit"] for h in r["hits"]],
        [100.0 * base[h["sample"]] for h in r["hits"]],
        [h["conversation"] for h in r["hits"]])
    r.update(versus=_name(first), difference=d.mean, low=d.low, high=d.high,
             p_value=d.p_value)
  compared = rows[1:]
  for r, p in zip(compared, _multiplicity.holm([r["p_value"]
                                                for r in compared])):
    r["p_holm"] = p
  _files.atomic_write(_OUTPUT.value,
                      "".join(json.dumps(r) + "\n" for r in rows))
  print("| embedding, routing | questions | conversations | routed to the "
        f"fact's episode | minus {_name(first)} (points, 95% interval over "
        "conversations) | p (Holm) |\n|---|---|---|---|---|---|")
  for r in rows:
    versus = (f"{r['difference']:+.1f} [{r['low']:+.1f}, {r['high']:+.1f}] "
              f"| {_p(r['p_holm'])}" if "versus" in r else " |")
    print(f"| {_name(r)} | {r['questions']} | {r['conversations']} | "
          f"{r['accuracy']:.1f}% | {versus} |")


if __name__ == "__main__":
  from kvp_jax import _cli  # pylint: disable=g-import-not-at-top
  _cli.run(main)
