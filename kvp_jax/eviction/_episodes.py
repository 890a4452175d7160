"""Episodes of a long conversation: windows, embeddings, k-means, routing.

EpiCache (Episodic KV Cache Management for Long Conversational Question
Answering) splits a conversation into windows of a few utterances, embeds
each window, clusters the windows into E episodes with k-means, and keeps,
per episode, the window(s) closest to its centroid (the medoids). At question
time the question is embedded the same way and sent to the nearest episode.

This module holds the offline half, with no eviction in it:

  split_windows       transcript text -> Windows of a few utterances
  embed_tokens        token lists -> [N, D] unit embeddings, mean-pooled from
                      the decoder's own input embeddings ("embedding"), the
                      hidden states after its first half of layers
                      ("middle") or its final ones ("hidden"), or the
                      tf-idf of their token ids over the conversation's
                      windows ("tfidf"); no extra model
  kmeans              seeded spherical-ish k-means (Lloyd on unit vectors,
                      k-means++ init, restarts), pure JAX
  cluster_episodes    windows' embeddings -> Episodes (labels, centroids,
                      medoid windows), episodes numbered by first window
  route               question embeddings -> nearest episode (cosine to its
                      centroid, medoids or nearest window)

Shapes: N windows (or questions), D embedding width (the model width; for
"tfidf" the number of distinct token ids of the windows), E episodes, Q
questions.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kvp_jax.model import Decoder, Pretrained

EMBEDDINGS = ("embedding", "middle", "hidden", "tfidf")
ROUTE_BY = ("centroid", "medoid", "window")


@dataclasses.dataclass(frozen=True)
class Window:
  """A few consecutive utterances of a transcript.

  index: the window's number, in transcript order.
  text: its utterances, joined by newlines.
  char_start, char_end: its span in the transcript (text ==
    transcript[char_start:char_end] up to the blank session lines).
  """
  index: int
  text: str
  char_start: int
  char_end: int


def split_windows(transcript: str, utterances: int) -> list[Window]:
  """Cuts a transcript (one utterance a line; blank lines are ignored) into
  windows of `utterances` lines, the last one possibly shorter.

  Raises:
    ValueError: utterances < 1, or a transcript without any utterance.
  """
  if isinstance(utterances, bool) or not isinstance(utterances, int) or (
      utterances < 1):
    raise ValueError(f"utterances per window must be a positive int, got "
                     f"{utterances!r}")
  lines, start = [], 0
  for line in transcript.split("\n"):
    if line.strip():
      lines.append((start, start + len(line)))
    start += len(line) + 1
  if not lines:
    raise ValueError("the transcript has no utterance to split into windows")
  out = []
  for i in range(0, len(lines), utterances):
    group = lines[i:i + utterances]
    text = "\n".join(transcript[a:b] for a, b in group)
    out.append(Window(len(out), text, group[0][0], group[-1][1]))
  return out


def window_of(windows: Sequence[Window], char: int) -> int:
  """The index of the window whose span holds character `char`."""
  for w in windows:
    if w.char_start <= char < w.char_end:
      return w.index
  raise ValueError(f"character {char} is in no window (blank line or past "
                   f"the end)")


def _pad_right(token_lists: Sequence[Sequence[int]], multiple: int = 32):
  if not token_lists or min(map(len, token_lists)) == 0:
    raise ValueError("embedding needs non-empty token lists")
  longest = max(map(len, token_lists))
  width = -(-longest // multiple) * multiple
  tokens = np.zeros((len(token_lists), width), np.int32)
  mask = np.zeros((len(token_lists), width), bool)
  for i, ids in enumerate(token_lists):
    tokens[i, :len(ids)] = ids
    mask[i, :len(ids)] = True
  return tokens, mask


def _unit(x: jax.Array, axis: int = -1) -> jax.Array:
  norm = jnp.linalg.norm(x, axis=axis, keepdims=True)
  return x / jnp.maximum(norm, 1e-12)


@jax.jit
def _pool_embeddings(table: jax.Array, tokens: jax.Array,
                     mask: jax.Array) -> jax.Array:
  """[N, D] unit mean of the input embeddings of each row's tokens."""
  x = jnp.take(table, tokens, axis=0).astype(jnp.float32)        # [N, T, D]
  m = mask[..., None].astype(jnp.float32)
  return _unit(jnp.sum(x * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0))


@functools.partial(jax.jit, static_argnames=("config",))
def _pool_hidden(config, params, tokens: jax.Array,
                 mask: jax.Array) -> jax.Array:
  """[N, D] unit mean of the final hidden states (each row read alone)."""
  positions = jnp.where(mask, jnp.cumsum(mask, axis=1) - 1, -1)
  out = Decoder(config).apply({"params": params}, tokens,
                              positions.astype(jnp.int32), None,
                              logits_at="none")
  m = mask[..., None].astype(jnp.float32)
  h = out.hidden.astype(jnp.float32)
  return _unit(jnp.sum(h * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0))


def tfidf(token_lists: Sequence[Sequence[int]],
          documents: Sequence[Sequence[int]]) -> np.ndarray:
  """Unit tf-idf rows of token lists over the vocabulary of `documents`.

  Each of the V distinct ids of the M documents is one column: a list's
  entry is (1 + log count) x (log((1 + M) / (1 + df)) + 1), df the number
  of documents holding the id (sublinear term frequency, smoothed inverse
  document frequency); ids no document holds are dropped, and a list of
  them alone is a zero row.

  Args:
    token_lists: N token lists.
    documents: M token lists (the windows of a conversation), not all empty.
  Returns:
    [N, V] float32, unit (or zero) rows; columns in increasing id order.
  """
  docs = [np.unique(np.asarray(d, np.int64)) for d in documents]
  if not docs or not any(d.size for d in docs):
    raise ValueError("tf-idf needs documents with tokens")
  vocab = np.unique(np.concatenate(docs))
  df = np.zeros(len(vocab))
  for d in docs:
    df[np.searchsorted(vocab, d)] += 1
  idf = np.log((1 + len(docs)) / (1 + df)) + 1
  out = np.zeros((len(token_lists), len(vocab)), np.float32)
  for i, ids in enumerate(token_lists):
    ids = np.asarray(ids, np.int64)
    ids, counts = np.unique(ids[np.isin(ids, vocab)], return_counts=True)
    col = np.searchsorted(vocab, ids)
    out[i, col] = (1 + np.log(counts)) * idf[col]
  norm = np.linalg.norm(out, axis=1, keepdims=True)
  return out / np.maximum(norm, 1e-12)


def embed_tokens(model: Pretrained, token_lists: Sequence[Sequence[int]],
                 kind: str = "embedding", batch_size: int = 16, *,
                 documents: Sequence[Sequence[int]] | None = None
                 ) -> np.ndarray:
  """Unit embeddings of token lists from the decoder itself (or, "tfidf",
  from their token ids).

  Args:
    model: the decoder.
    token_lists: N token lists (no BOS needed; "hidden" reads each alone).
    kind: "embedding" (mean of the input embeddings, EpiCache's "llm"
      option: cheap, lexical), "middle" (mean of the hidden states after
      the first num_layers // 2 layers, final-normed: a forward through
      half the decoder per list), "hidden" (mean of the final hidden
      states: a forward per list) or "tfidf" (tfidf over `documents`: the
      classic lexical retrieval vector; no forward).
    batch_size: lists per forward ("middle", "hidden").
    documents: "tfidf" only: the lists that define its vocabulary and
      document frequencies (a conversation's windows; default token_lists),
      the same for windows and questions so that they compare.
  Returns:
    [N, D] float32, unit rows (D: the model width; for "tfidf", the
    distinct ids of `documents`, and a list sharing none is a zero row).
  """
  if kind not in EMBEDDINGS:
    raise ValueError(f"unknown embedding kind {kind!r}; known: {EMBEDDINGS}")
  if kind == "tfidf":
    return tfidf(token_lists, token_lists if documents is None else documents)
  tokens, mask = _pad_right(token_lists)
  if kind == "embedding":
    table = model.params["embedder"]["input_embedding"]
    return np.asarray(_pool_embeddings(table, tokens, mask))
  config = model.config
  if kind == "middle":          # The first half of the layers, same params.
    config = dataclasses.replace(config,
                                 num_layers=max(config.num_layers // 2, 1))
  out = [np.asarray(_pool_hidden(config, model.params,
                                 tokens[i:i + batch_size],
                                 mask[i:i + batch_size]))
         for i in range(0, len(tokens), batch_size)]
  return np.concatenate(out, axis=0)


def _plus_plus_init(x: jax.Array, k: int, key: jax.Array) -> jax.Array:
  """k-means++ seeding: [k, D] centroids drawn from the rows of x [N, D]."""
  n = x.shape[0]
  key, sub = jax.random.split(key)
  first = jax.random.randint(sub, (), 0, n)
  centroids = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])
  dist = jnp.sum((x - x[first]) ** 2, axis=1)

  def body(i, state):
    centroids, dist, key = state
    key, sub = jax.random.split(key)
    p = jnp.where(jnp.sum(dist) > 0, dist / jnp.maximum(jnp.sum(dist), 1e-30),
                  jnp.ones_like(dist) / n)
    pick = jax.random.choice(sub, n, p=p)
    centroids = centroids.at[i].set(x[pick])
    dist = jnp.minimum(dist, jnp.sum((x - x[pick]) ** 2, axis=1))
    return centroids, dist, key

  centroids, _, _ = jax.lax.fori_loop(1, k, body, (centroids, dist, key))
  return centroids


def _lloyd(x: jax.Array, centroids: jax.Array, iters: int):
  """Lloyd iterations; an emptied cluster keeps its previous centroid.
  Returns (centroids [k, D], labels [N], inertia [])."""
  k = centroids.shape[0]

  def assign(c):
    d = jnp.sum((x[:, None] - c[None]) ** 2, axis=-1)              # [N, k]
    return jnp.argmin(d, axis=1), jnp.min(d, axis=1)

  def body(_, c):
    labels, _ = assign(c)
    onehot = jax.nn.one_hot(labels, k, dtype=x.dtype)              # [N, k]
    counts = jnp.sum(onehot, axis=0)
    sums = onehot.T @ x
    return jnp.where(counts[:, None] > 0,
                     sums / jnp.maximum(counts, 1.0)[:, None], c)

  centroids = jax.lax.fori_loop(0, iters, body, centroids)
  labels, d = assign(centroids)
  return centroids, labels, jnp.sum(d)


@functools.partial(jax.jit, static_argnames=("k", "iters", "restarts"))
def kmeans(x: jax.Array, k: int, key: jax.Array, iters: int = 50,
           restarts: int = 8) -> tuple[jax.Array, jax.Array]:
  """k-means of the rows of x, the best of `restarts` k-means++ seedings.

  Deterministic for a key (every random draw comes from it).

  Args:
    x: [N, D] float (unit embeddings: Euclidean k-means on the sphere, as
      EpiCache runs scikit-learn's KMeans on normalised embeddings).
    k: clusters (static), 1 <= k <= N.
    key: PRNG key.
  Returns:
    (centroids [k, D] float32, labels [N] int32) of the lowest-inertia run.
  """
  if not 1 <= k <= x.shape[0]:
    raise ValueError(f"k={k} clusters for {x.shape[0]} points; need "
                     f"1 <= k <= points")
  x = x.astype(jnp.float32)

  def one(key):
    return _lloyd(x, _plus_plus_init(x, k, key), iters)

  cents, labels, inertia = jax.vmap(one)(jax.random.split(key, restarts))
  best = jnp.argmin(inertia)
  return cents[best], labels[best].astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class Episodes:
  """A conversation's windows clustered into episodes.

  Episodes are numbered by their first window (episode 0 starts earliest),
  so the numbering does not depend on k-means' internal order.

  Attributes:
    labels: [N] int, each window's episode.
    centroids: [E, D] float32 unit centroids (the cluster means, normalised).
    medoids: per episode, the indices of its `medoids_per_episode` windows
      closest to the centroid (cosine), in transcript order.
    embeddings: [N, D] the windows' unit embeddings.
  """
  labels: np.ndarray
  centroids: np.ndarray
  medoids: tuple[tuple[int, ...], ...]
  embeddings: np.ndarray

  @property
  def num_episodes(self) -> int:
    return len(self.medoids)

  def medoid_embeddings(self) -> np.ndarray:
    """[E, D] unit mean of each episode's medoid windows."""
    out = np.stack([self.embeddings[list(m)].mean(0) for m in self.medoids])
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def cluster_episodes(embeddings: np.ndarray, num_episodes: int,
                     key: jax.Array, *, medoids_per_episode: int = 1,
                     iters: int = 50, restarts: int = 8) -> Episodes:
  """k-means of window embeddings into episodes, with their medoids.

  Args:
    embeddings: [N, D] unit window embeddings (embed_tokens).
    num_episodes: E, at most N.
    key: PRNG key of the k-means seeding.
    medoids_per_episode: windows kept per episode (fewer if it has fewer).
  Raises:
    ValueError: E > N, or k-means left an episode empty (duplicate points).
  """
  x = np.asarray(embeddings, np.float32)
  if x.ndim != 2:
    raise ValueError(f"embeddings must be [windows, width], got {x.shape}")
  if not 1 <= num_episodes <= len(x):
    raise ValueError(f"{num_episodes} episodes for {len(x)} windows; use at "
                     f"most one episode per window")
  if medoids_per_episode < 1:
    raise ValueError(f"medoids_per_episode must be >= 1, got "
                     f"{medoids_per_episode}")
  cents, labels = kmeans(jnp.asarray(x), num_episodes, key, iters=iters,
                         restarts=restarts)
  cents, labels = np.asarray(cents), np.asarray(labels)
  used = [c for c in range(num_episodes) if np.any(labels == c)]
  if len(used) < num_episodes:
    raise ValueError(f"k-means gave {len(used)} non-empty episodes of "
                     f"{num_episodes} (too many identical windows); ask for "
                     f"fewer episodes")
  order = sorted(used, key=lambda c: int(np.argmax(labels == c)))
  renumber = np.empty(num_episodes, np.int32)
  renumber[order] = np.arange(num_episodes)
  labels = renumber[labels]
  cents = cents[order]
  cents = cents / np.maximum(np.linalg.norm(cents, axis=1, keepdims=True),
                             1e-12)
  medoids = []
  for e in range(num_episodes):
    members = np.flatnonzero(labels == e)
    sim = x[members] @ cents[e]
    # Most similar first; ties to the earlier window.
    best = members[np.lexsort((members, -sim))][:medoids_per_episode]
    medoids.append(tuple(sorted(int(i) for i in best)))
  return Episodes(labels=labels, centroids=cents.astype(np.float32),
                  medoids=tuple(medoids), embeddings=x)


def route(questions: np.ndarray, episodes: Episodes,
          by: str = "centroid") -> np.ndarray:
  """The episode each question goes to: the highest cosine similarity to
  the episode's centroid (EpiCache), to its medoid windows' embedding, or
  to any one of its windows ("window": the episode of the nearest window).

  Args:
    questions: [Q, D] (or [D]) question embeddings.
    by: "centroid", "medoid" or "window".
  Returns:
    [Q] int episode indices (a scalar array for a [D] input).
  """
  if by not in ROUTE_BY:
    raise ValueError(f"unknown routing {by!r}; known: {ROUTE_BY}")
  q = np.asarray(questions, np.float32)
  single = q.ndim == 1
  q = np.atleast_2d(q)
  if q.shape[1] != episodes.centroids.shape[1]:
    raise ValueError(f"question embeddings of width {q.shape[1]}, episodes "
                     f"of width {episodes.centroids.shape[1]}")
  q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
  # A question that shares nothing with any window (a zero tf-idf row) ties
  # everywhere and goes to the first window's or centroid's episode.
  if by == "window":
    out = episodes.labels[np.argmax(q @ episodes.embeddings.T, axis=1)]
  else:
    ref = episodes.centroids if by == "centroid" else (
        episodes.medoid_embeddings())
    out = np.argmax(q @ ref.T, axis=1)
  return out[0] if single else out
