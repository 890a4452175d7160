"""One long conversation, end to end through episodic caches (text in, scored
answers out): the EpiCache procedure on samples that share a context, such as
kvp_jax.samples.long_conversations writes (several questions per
conversation, one `metadata["conversation_id"]`).

  1. the transcript is cut into windows of a few utterances, each embedded
     (settings.embedding: tf-idf of its token ids by default, or the
     decoder's own embeddings), clustered into episodes (seeded);
  2. every episode's observation window is an instruction followed by its
     medoid windows; the conversation is prefilled block by block once per
     episode, evicted after every block to the budget (prefill_episodes),
     scored by the in-episode scorer (settings.scorer: "kvzip", the paper's
     max over the window's queries, or "snapkv", SnapKV's pooled mean);
  3. each question (the text after its last "Question:", so the shared
     instruction does not dominate the embedding) is embedded the same way,
     routed (settings.route_by: to the episode of its nearest window by
     default, or of the nearest centroid, the paper's) and answered through
     that episode's cache.

answer_compressed is the plain baseline: one compressed cache of the whole
conversation, every question answered from it.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from kvp_jax import inference
from kvp_jax.eviction import _episodes
from kvp_jax.eviction._episodic import answer_questions, prefill_episodes
from kvp_jax.eviction._episodic import episode_scorer, EPISODE_SCORERS
from kvp_jax.eviction._sensitivity import RULES
from kvp_jax.eviction._runtime import prefill_compressed
from kvp_jax.eviction._spec import Eviction
from kvp_jax.model import Pretrained
from kvp_jax.samples import scoring

INSTRUCTION = ("Extract the essential information of this part of the "
               "conversation: names, places, numbers, dates and plans.")


@dataclasses.dataclass(frozen=True)
class EpisodicSettings:
  """How a conversation is cut into episodes and routed.

  num_episodes: E (fewer when the conversation has fewer windows).
  utterances: utterances per window.
  medoids: windows per episode in its observation window.
  embedding: "tfidf" (token-id tf-idf over the conversation's windows),
    "embedding" (mean input embedding), "middle" (mean hidden state after
    half the layers) or "hidden" (mean final hidden state).
  route_by: "window" (the episode of the window nearest the question),
    "centroid" (EpiCache's) or "medoid". The defaults route best on dev
    conversations: 79% of questions to their fact's episode against 52%
    for the input embedding and centroids
    (experiments/results/long_conversations/routing_dev.jsonl).
  instruction: text before the medoid windows in the observation window.
  seed: the k-means seed.
  restarts: k-means++ restarts.
  scorer: the in-episode scorer (episode_scorer): "kvzip" (EpiCache's:
    the max attention over the observation's queries and the GQA group, no
    pooling) or "snapkv" (SnapKV's window mean, pooled; the earlier
    default). answer_conversation uses it when given no scorer.
  rule: how layer budgets are shared by sensitivity (layer_budgets):
    "paper" ((1 - minmax(similarity))**alpha, clamped) or "power" (the
    earlier sensitivity**alpha above a floor).
  matched_memory: layer budgets that sum to what the uniform cell keeps
    (matched_layer_budgets; True) or to budget x layers (False, the earlier
    total: a sliding-window layer's excess goes to the global layers).
  rule and matched_memory are read by whoever makes the layer budgets from
  a profile (the episodic suite), not by answer_conversation.
  """
  num_episodes: int = 4
  utterances: int = 4
  medoids: int = 2
  embedding: str = "tfidf"
  route_by: str = "window"
  instruction: str = INSTRUCTION
  seed: int = 0
  restarts: int = 8
  scorer: str = "kvzip"
  rule: str = "paper"
  matched_memory: bool = True

  def __post_init__(self):
    for name in ("num_episodes", "utterances", "medoids", "restarts"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"episodic {name} must be a positive int, got "
                         f"{value!r}")
    if self.embedding not in _episodes.EMBEDDINGS:
      raise ValueError(f"unknown episodic embedding {self.embedding!r}; "
                       f"known: {_episodes.EMBEDDINGS}")
    if self.route_by not in _episodes.ROUTE_BY:
      raise ValueError(f"unknown episodic routing {self.route_by!r}; known: "
                       f"{_episodes.ROUTE_BY}")
    if self.scorer not in EPISODE_SCORERS:
      raise ValueError(f"unknown in-episode scorer {self.scorer!r}; known: "
                       f"{EPISODE_SCORERS}")
    if self.rule not in RULES:
      raise ValueError(f"unknown layer budget rule {self.rule!r}; known: "
                       f"{RULES}")
    if not isinstance(self.matched_memory, bool):
      raise ValueError(f"episodic matched_memory must be a bool, got "
                       f"{self.matched_memory!r}")


def routing_text(question: str) -> str:
  """What a question is routed by: the text after its last "Question:"."""
  return question.rsplit("Question:", 1)[-1].strip() or question


def _check_one_conversation(samples) -> None:
  if not samples:
    raise ValueError("no samples to answer")
  ids = {s.metadata.get("conversation_id") for s in samples}
  contexts = {s.context for s in samples}
  if len(contexts) != 1:
    raise ValueError(f"the samples have {len(contexts)} different contexts "
                     f"(conversations {sorted(map(str, ids))}); answer one "
                     f"conversation at a time")


def build_episodes(model: Pretrained, context: str,
                   settings: EpisodicSettings):
  """(windows, Episodes, observation token lists) of a transcript."""
  tok = model.tokenizer
  windows = _episodes.split_windows(context, settings.utterances)
  emb = _episodes.embed_tokens(model, [tok.encode(w.text) for w in windows],
                               settings.embedding)   # tfidf: over themselves.
  episodes = _episodes.cluster_episodes(
      emb, min(settings.num_episodes, len(windows)),
      jax.random.key(settings.seed), medoids_per_episode=settings.medoids,
      restarts=settings.restarts)
  observations = [tok.encode("\n\n" + settings.instruction + "\n" + "\n".join(
      windows[i].text for i in medoid)) for medoid in episodes.medoids]
  return windows, episodes, observations


def route_questions(model: Pretrained, samples, windows, episodes,
                    settings: EpisodicSettings) -> np.ndarray:
  """[Q] the episode each sample's question goes to (routing_text of it,
  embedded as the windows were)."""
  tok = model.tokenizer
  documents = ([tok.encode(w.text) for w in windows]
               if settings.embedding == "tfidf" else None)
  return np.asarray(_episodes.route(_episodes.embed_tokens(
      model, [tok.encode(routing_text(s.question)) for s in samples],
      settings.embedding, documents=documents), episodes,
      by=settings.route_by))


def _questions(model: Pretrained, samples):
  """(question token lists, max new tokens, room the caches need)."""
  tok = model.tokenizer
  questions = [tok.encode("\n" + s.question + s.answer_prefix)
               for s in samples]
  max_new = max(s.max_new_tokens for s in samples)
  room = inference.bucket_length(max(map(len, questions)), 16) + max_new
  return questions, max_new, room


def _rows(model: Pretrained, samples, answers, pre, *, episodes=None,
          routed=None, windows=None) -> list[dict]:
  """One scored row per sample (see answer_conversation)."""
  rows = []
  num = 1 if episodes is None else episodes.num_episodes
  per_row = pre.cache.num_bytes() / num
  for i, (s, ids) in enumerate(zip(samples, answers)):
    text = model.tokenizer.decode(ids[:s.max_new_tokens])
    row = dict(sample=s.id, prediction=text[:200],
               value=100 * scoring.score_sample(s, text),
               peak_slots=pre.peak_slots, cache_bytes=per_row,
               peak_bytes=pre.peak_bytes, num_episodes=num)
    if episodes is not None:
      fact = s.metadata.get("fact") or {}
      fact_episode = None
      if "char_start" in fact:
        fact_episode = int(episodes.labels[_episodes.window_of(
            windows, fact["char_start"])])
      row.update(episode=int(routed[i]), fact_episode=fact_episode)
    rows.append(row)
  return rows


def answer_compressed(model: Pretrained, scorer, eviction: Eviction,
                      samples: Sequence, *,
                      rng: jax.Array | None = None) -> list[dict]:
  """Every question of one conversation answered through one cache: the
  conversation compressed once per `eviction` (protocol "chunked": block by
  block, evicted after every block, EasyKV's stride; "once": after a full
  prefill; Eviction(None): kept whole), with no knowledge of the questions,
  then each question read from that same state (the full cache and the
  plain baselines of EpiCache's comparison; earlier questions and answers
  are not appended).

  Returns one row per sample: id, prediction, value (x100 score),
  peak_slots, cache_bytes and peak_bytes (of the one cache).
  """
  if model.tokenizer is None:
    raise ValueError("answering conversations needs a model with a tokenizer")
  _check_one_conversation(samples)
  questions, max_new, room = _questions(model, samples)
  context = model.tokenizer.encode(samples[0].context, add_bos=True)
  pre = prefill_compressed(model, scorer, eviction, [context], room, rng=rng)
  answers = answer_questions(model, pre, [0] * len(samples), questions,
                             max_new)
  return _rows(model, samples, answers, pre)


def answer_conversation(model: Pretrained, scorer, eviction: Eviction,
                        samples: Sequence, settings: EpisodicSettings, *,
                        layer_budgets: Sequence[int] | None = None,
                        rng: jax.Array | None = None) -> list[dict]:
  """Every question of one conversation answered through its episode.

  Args:
    model: a decoder with a tokenizer.
    scorer: the episodic prefill's scorer (a MedoidBlendScorer, a
      query-free one, ...); None: episode_scorer(settings.scorer).
    eviction: budget per head and block (`chunk_size`).
    samples: the conversation's samples (one context).
    settings: episodes and routing.
    layer_budgets: optional per-layer budgets (sensitivity-aware).
  Returns:
    One row per sample: sample (its id), episode (routed), fact_episode
    (the episode of the window that holds the planted fact, when the
    metadata says where),
    prediction, value (x100 score), peak_slots, cache_bytes (per episode),
    peak_bytes (all E caches together, during the prefill).
  """
  if model.tokenizer is None:
    raise ValueError("answering conversations needs a model with a tokenizer")
  _check_one_conversation(samples)
  tok = model.tokenizer
  context = samples[0].context
  windows, episodes, observations = build_episodes(model, context, settings)
  questions, max_new, room = _questions(model, samples)
  routed = route_questions(model, samples, windows, episodes, settings)
  if scorer is None:
    scorer = episode_scorer(settings.scorer)
  pre = prefill_episodes(model, scorer, eviction,
                         tok.encode(context, add_bos=True), observations,
                         room, layer_budgets=layer_budgets, rng=rng)
  answers = answer_questions(model, pre, routed, questions, max_new)
  return _rows(model, samples, answers, pre, episodes=episodes,
               routed=np.asarray(routed).tolist(), windows=windows)


def routing_accuracy(model: Pretrained, samples: Sequence,
                     settings: EpisodicSettings) -> dict:
  """How often a question is routed to the episode that holds its planted
  fact (no cache is built: episodes and routing only).

  Args:
    model: a decoder with a tokenizer.
    samples: long-conversation samples (any number of conversations), each
      with metadata["fact"]["char_start"].
    settings: episodes and routing (its embedding and route_by are what
      is compared).
  Returns:
    {"questions", "conversations", "routed_to_fact", "accuracy" (%),
     "hits": [{"conversation", "sample", "hit" (0 or 1)}, one per question,
     for paired comparisons that resample conversations]}.
  """
  return routing_accuracies(model, samples, settings,
                            (settings.route_by,))[settings.route_by]


def routing_accuracies(model: Pretrained, samples: Sequence,
                       settings: EpisodicSettings,
                       ways: Sequence[str]) -> dict[str, dict]:
  """routing_accuracy for each routing of `ways` (settings.route_by
  replaced), from one clustering of each conversation: {way: result}."""
  by_conversation: dict[str, list] = {}
  for s in samples:
    by_conversation.setdefault(s.metadata["conversation_id"], []).append(s)
  hits = {way: [] for way in ways}
  for conversation, group in by_conversation.items():
    windows, episodes, _ = build_episodes(model, group[0].context, settings)
    facts = [episodes.labels[_episodes.window_of(
        windows, s.metadata["fact"]["char_start"])] for s in group]
    for way in ways:
      routed = route_questions(model, group, windows, episodes,
                               dataclasses.replace(settings, route_by=way))
      hits[way] += [{"conversation": str(conversation), "sample": str(s.id),
                     "hit": int(episode == fact)}
                    for s, episode, fact in zip(group, routed, facts)]
  n = len(samples)
  out = {}
  for way, way_hits in hits.items():
    right = sum(h["hit"] for h in way_hits)
    out[way] = {"questions": n, "conversations": len(by_conversation),
                "routed_to_fact": right, "accuracy": 100.0 * right / max(n, 1),
                "hits": way_hits}
  return out
