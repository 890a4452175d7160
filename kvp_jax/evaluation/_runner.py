"""The evaluation grid: scorers x budgets x suites, resumable.

`eval.metrics` adds optional metrics to the primary ones (accuracy,
perplexity, normalised_cost): "fidelity" logs, per compressed cell and
sample, the teacher-forced fidelity to the full cache (agreement, kl,
fidelity_ll: one forward pass over the full cache's greedy answer or the
reference continuation); "evicted_share" logs, in attention_cost suites,
each head's evicted share of future importance at fixed budgets. Verdicts
(retention, paired bootstrap intervals) go to verdicts.jsonl, never into
results.jsonl.

Every (sample, scorer, budget) result is appended to <output>/samples.jsonl
as soon as it exists; a rerun skips what is there, so a killed evaluation
continues where it stopped. The aggregate (results.jsonl, results.md and one
PNG per suite) is rebuilt from that log at the end.

Batches of samples of similar length are prefilled once (with the prefill
attention statistics when an attention-based scorer is in the grid) and the
one full cache is compressed by every (scorer, budget) pair.

Several processes (kvp_jax.distributed) share the batches: in round r,
process i of P evaluates batch r*P + i, then every process's new rows are
gathered (`distributed.gather_rows`) and process 0 appends them to
samples.jsonl in batch order, so its log, and the report built from it,
are those of one process. Process 0 alone writes files.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import zlib
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from kvp_jax import _files
from kvp_jax import distributed
from kvp_jax import cache as cache_lib
from kvp_jax import eviction as eviction_lib
from kvp_jax import objective
from kvp_jax import policy as policy_lib
from kvp_jax import scorers as scorers_lib
from kvp_jax import traces as traces_lib
from kvp_jax.evaluation import _evicted_share as evicted_share_lib
from kvp_jax.evaluation import _fidelity as fidelity_lib
from kvp_jax.evaluation import _paired
from kvp_jax.evaluation import _report
from kvp_jax.evaluation._config import DEFAULT_METRICS
from kvp_jax.evaluation._config import EvalConfig
from kvp_jax.evaluation._config import OPTIONAL_METRICS
from kvp_jax.evaluation._config import PRIMARY_METRICS
from kvp_jax.evaluation import _suites
from kvp_jax.evaluation import _verdicts
from kvp_jax.model import EOS_ID, Pretrained
from kvp_jax.samples import scoring

FULL = "full"   # The uncompressed cache's scorer / budget label.
FIDELITY_METRICS = ("agreement", "kl", "fidelity_ll")


def make_scorers(names: Sequence[str],
                 policies: Mapping[str, str | os.PathLike[str]] | str |
                 os.PathLike[str], model: Pretrained
                 ) -> tuple[dict[str, scorers_lib.Scorer],
                            cache_lib.Protected | None]:
  """Scorers by name; a policy's name ("kvp", or a name of eval.policies)
  loads its artifact from `policies` ({name: path}; a single path is
  "kvp"'s), checked against the model it will score. Also returns the
  policies' protected set (None without a policy).

  Raises:
    ValueError: two policies protect different tokens (their cells would
      not be comparable).
  """
  if isinstance(policies, (str, os.PathLike)):
    policies = {"kvp": policies}
  out, protected, first = {}, None, None
  for name in names:
    if name not in policies:
      out[name] = scorers_lib.get_scorer(name)
      continue
    out[name], artifact = scorers_lib.load_policy(policies[name], model)
    if protected is None:
      protected, first = artifact.protected, name
    elif artifact.protected != protected:
      raise ValueError(
          f"policies {first!r} and {name!r} protect different tokens "
          f"({protected.num_sinks} sinks and {protected.num_recent} recent "
          f"against {artifact.protected.num_sinks} and "
          f"{artifact.protected.num_recent}); evaluate them in separate "
          "grids")
  return out, protected


class SampleLog(_files.JsonlLog):
  """Append-only JSONL of per-sample results, keyed for resuming."""

  KEY = ("suite", "sample", "scorer", "budget", "protocol", "allocation",
         "settings", "metric")

  def __init__(self, path: Path):
    super().__init__(path)
    self.done = {self._key(r) for r in self.rows}

  def _key(self, row) -> tuple:
    return tuple(str(row.get(k)) for k in self.KEY)

  def has(self, **key) -> bool:
    return self._key(key) in self.done

  def add(self, rows: Iterable[dict]) -> None:
    """Appends the rows not logged yet (a batch may be partly done)."""
    rows = self.append(r for r in rows if self._key(r) not in self.done)
    self.done |= {self._key(r) for r in rows}


class MergedLog(SampleLog):
  """The sample log of a multi-process evaluation: process 0's
  samples.jsonl. Every process knows every logged key (so each skips what
  is done); rows added here are kept until `merge`, which gathers every
  process's rows, in process order, and appends them on process 0."""

  def __init__(self, path: Path):  # pylint: disable=super-init-not-called
    if distributed.is_primary():
      super().__init__(path)
    else:                         # Process 0's file may be on its disk only.
      self.path, self.sync, self.rows, self.done = Path(path), False, [], set()
    self.done = set(distributed.gather_rows(
        sorted(self.done) if distributed.is_primary() else []))
    self._new: list[dict] = []

  def add(self, rows: Iterable[dict]) -> None:
    rows = [r for r in rows if self._key(r) not in self.done]
    self._new += rows
    self.done |= {self._key(r) for r in rows}

  def merge(self) -> None:
    """Every process's rows since the last merge into process 0's file (a
    collective: every process calls it)."""
    rows = distributed.gather_rows(self._new)
    self._new = []
    self.done |= {self._key(r) for r in rows}
    if distributed.is_primary():
      self.append(rows)


def _process_batches(batches: Sequence, log: SampleLog):
  """This process's batches: every batch when alone; else batch r*P + i in
  round r (process i of P), and after each round the rows are merged
  (`MergedLog.merge`)."""
  count = jax.process_count()
  if count == 1:
    yield from batches
    return
  for start in range(0, len(batches), count):
    if start + jax.process_index() < len(batches):
      yield batches[start + jax.process_index()]
    log.merge()


def _batches(items: Sequence[_suites.Item], size: int, kind: str = ""):
  """Items grouped into batches of similar prompt length (same bucket); an
  episodic suite's, one conversation a batch (its questions share one
  compressed state)."""
  if kind == "episodic":
    conversations: dict[str, list] = {}
    for item in items:
      conversations.setdefault(item.sample.metadata["conversation_id"],
                               []).append(item)
    yield from conversations.values()
    return
  order = sorted(range(len(items)), key=lambda i: (len(items[i].prompt), i))
  for start in range(0, len(order), size):
    yield [items[i] for i in order[start:start + size]]


def _oracle_importance(model: Pretrained, items, continuations,
                       max_new: int) -> np.ndarray:
  """[B, L, K, P] future importance by position of each prompt token, for
  the given continuations (the full-cache answer, or the reference)."""
  recorded = traces_lib.record_traces(
      model, [list(i.prompt) for i in items], None, max_new_tokens=max_new,
      with_kv=False, continuations=continuations)
  width = max(t.length for t in recorded)
  c = model.config
  out = np.zeros((len(items), c.num_layers, c.num_kv_heads, width),
                 np.float32)
  for i, t in enumerate(recorded):
    out[i, :, :, :t.length] = t.importance[:, :, 0]
  return out


@dataclasses.dataclass
class Grid:
  """What to evaluate (the config's `eval` section, resolved).

  identity: what makes results reusable by a rerun besides the cell itself
    (the model's fingerprint; per scorer, e.g. the policy file's hash).
  """
  scorers: dict[str, scorers_lib.Scorer]
  budgets: tuple[int, ...]
  protected: cache_lib.Protected
  protocol: str
  allocation: str
  chunk_size: int
  decode_interval: int
  batch_size: int
  include_full: bool
  seed: int
  identity: dict[str, str] = dataclasses.field(default_factory=dict)
  metrics: tuple[str, ...] = DEFAULT_METRICS

  def __post_init__(self):
    unknown = set(self.metrics) - set(PRIMARY_METRICS + OPTIONAL_METRICS)
    if unknown:
      raise ValueError(f"unknown eval metrics {sorted(unknown)}; known: "
                       f"{PRIMARY_METRICS + OPTIONAL_METRICS}")

  @property
  def fidelity(self) -> bool:
    return "fidelity" in self.metrics

  @property
  def evicted_share(self) -> bool:
    return "evicted_share" in self.metrics

  def settings(self, scorer: str) -> str:
    """A short id of everything a (scorer) result depends on beyond its
    cell: a rerun with another policy, model or protocol setting does not
    reuse old results."""
    text = json.dumps([self.identity.get("model"),
                       self.identity.get(scorer), scorer == FULL or [
                           self.chunk_size, self.decode_interval, self.seed]])
    return hashlib.sha256(text.encode()).hexdigest()[:12]

  def evictions(self):
    """(scorer name, budget label, Eviction) cells, the full cache first."""
    if self.include_full:
      yield FULL, FULL, eviction_lib.Eviction(None, protected=self.protected)
    for name in self.scorers:
      for b in self.budgets:
        yield name, b, eviction_lib.Eviction(
            b, protocol=self.protocol, allocation=self.allocation,
            chunk_size=self.chunk_size,
            decode_interval=self.decode_interval, protected=self.protected)


def _scorer_of(grid: Grid, name: str):
  return grid.scorers.get(name) or scorers_lib.get_scorer("knorm")


def _pending_cells(grid, suite_name, batch, log, metrics=("accuracy",)):
  """The grid's (scorer, budget, eviction) cells some sample of the batch
  still lacks in the log, for some of the metrics."""
  return [c for c in grid.evictions()
          if not all(log.has(suite=suite_name, sample=i.sample.id,
                             scorer=c[0], budget=c[1],
                             settings=grid.settings(c[0]), metric=m,
                             **_tag(c, grid)) for i in batch for m in metrics)]


def _pending_fidelity(grid, suite_name, batch, log):
  """The compressed cells lacking fidelity rows (none unless asked for)."""
  if not grid.fidelity:
    return []
  return [c for c in _pending_cells(grid, suite_name, batch, log,
                                    FIDELITY_METRICS) if c[1] != FULL]


def _log_fidelity(model, grid, suite_name, batch, log, rng, cells, context,
                  prompts, conts, importance, perplexity=False):
  """Teacher-forced fidelity of every cell to the full cache on `conts`
  (the full cache's answers, or the references): agreement (% top-1
  agreement with the full cache's token), kl (mean KL(full || compressed),
  nats), fidelity_ll (mean log-likelihood per token of conts under the
  compressed cache).

  perplexity=True (conts are the references of a perplexity suite, not the
  full cache's tokens): agreement is with the full cache's argmax at each
  position, and the same pass also logs each cell's perplexity row (nll,
  tokens, value = exp(nll / tokens)) where it is missing, so no second
  teacher-forced pass over the references is needed.
  """
  full, _ = eviction_lib.continuation_logits(
      model, _scorer_of(grid, FULL), eviction_lib.Eviction(
          None, protected=grid.protected), context, conts)    # [B, W, V]
  width = full.shape[1]
  tokens = np.zeros((len(conts), width), np.int32)
  mask = np.zeros((len(conts), width), bool)
  for i, c in enumerate(conts):
    tokens[i, :len(c)], mask[i, :len(c)] = c, True
  for name, budget, eviction in cells:
    source = prompts if eviction.evicts_while_prefilling else context
    logits, stats = eviction_lib.continuation_logits(
        model, _scorer_of(grid, name), eviction, source, conts,
        importance=importance,
        rng=jax.random.fold_in(rng, _cell_seed(name, budget)))
    m = {k: np.asarray(v) for k, v in fidelity_lib.fidelity_metrics(
        full, logits, jnp.asarray(tokens), jnp.asarray(mask),
        agree_with="full_argmax" if perplexity else "tokens").items()}
    del logits
    if perplexity:
      log.add(_perplexity_row(suite_name, item, grid, (name, budget),
                              -float(m["log_likelihood"][i]),
                              int(m["tokens"][i]),
                              stats["cache_bytes"] / len(batch))
              for i, item in enumerate(batch))
    log.add(dict(suite=suite_name, sample=item.sample.id, group=item.group,
                 scorer=name, budget=budget, settings=grid.settings(name),
                 **_tag((name, budget), grid), metric=metric,
                 value=float(value), tokens=int(m["tokens"][i]),
                 cache_bytes=stats["cache_bytes"] / len(batch))
            for i, item in enumerate(batch)
            for metric, value in (
                ("agreement", m["top1_agreement"][i]), ("kl", m["kl"][i]),
                ("fidelity_ll", m["log_likelihood"][i] /
                 max(int(m["tokens"][i]), 1))))


def _generation_fidelity(model, grid, suite_name, batch, log, rng, cells,
                         context, prompts, full_out, importance):
  """RULER-style fidelity: every cell teacher-forced on the full cache's
  greedy answer (generated here when the full cell was logged before)."""
  max_new = max(i.max_new_tokens for i in batch)
  if full_out is None:
    full_out, _ = eviction_lib.generate_compressed(
        model, _scorer_of(grid, FULL), eviction_lib.Eviction(None),
        context, max_new)
  if importance is None and any(_scorer_of(grid, n).needs_future
                                for n, _, _ in cells):
    importance = _oracle_importance(model, batch, full_out, max_new)
  conts = [list(ids[:item.max_new_tokens]) or [EOS_ID]
           for item, ids in zip(batch, full_out)]
  _log_fidelity(model, grid, suite_name, batch, log, rng, cells, context,
                prompts, conts, importance)


def _run_generation(model, grid, suite_name, batch, log, rng):
  """RULER-style: generate with every cell, score each answer."""
  max_new = max(i.max_new_tokens for i in batch)
  cells = _pending_cells(grid, suite_name, batch, log)
  fidelity = _pending_fidelity(grid, suite_name, batch, log)
  if not cells and not fidelity:
    return
  needs_capture = any(grid.scorers[n].needs_prefill_attention
                      for n, b, _ in cells + fidelity if b != FULL)
  prompts = [list(i.prompt) for i in batch]
  context = eviction_lib.prefill_context(model, prompts,
                                         capture=needs_capture)
  importance = None
  full_out = None
  for name, budget, eviction in cells:
    scorer = _scorer_of(grid, name)
    if scorer.needs_future and importance is None:
      if full_out is None:
        full_out, _ = eviction_lib.generate_compressed(
            model, scorer, eviction_lib.Eviction(None), context, max_new)
      importance = _oracle_importance(model, batch, full_out, max_new)
    # A chunked prefill evicts as it reads, so it starts from the prompts.
    source = prompts if eviction.evicts_while_prefilling else context
    out, stats = eviction_lib.generate_compressed(
        model, scorer, eviction, source, max_new, importance=importance,
        rng=jax.random.fold_in(rng, _cell_seed(name, budget)))
    if name == FULL:
      full_out = out
    rows = []
    for item, ids in zip(batch, out):
      text = model.tokenizer.decode(ids[:item.max_new_tokens])
      rows.append(dict(
          suite=suite_name, sample=item.sample.id, group=item.group,
          scorer=name, budget=budget, settings=grid.settings(name),
          **_tag((name, budget), grid),
          metric="accuracy", value=100 * scoring.score_sample(item.sample,
                                                              text),
          prediction=text[:200], cache_bytes=stats["cache_bytes"] / len(batch),
          peak_slots=stats["peak_slots"]))
    log.add(rows)
  if fidelity:
    _generation_fidelity(model, grid, suite_name, batch, log, rng, fidelity,
                         context, prompts, full_out, importance)


def _cell_seed(name, budget) -> int:
  """A stable per-cell seed (Python's hash() of a str changes per process)."""
  return zlib.crc32(f"{name}|{budget}".encode()) % 2**31


def _tag(cell, grid):
  """A cell's protocol and allocation (the full cache has neither)."""
  return ({"protocol": FULL, "allocation": FULL} if cell[1] == FULL
          else {"protocol": grid.protocol, "allocation": grid.allocation})


def _run_perplexity(model, grid, suite_name, batch, log, rng):
  cells = _pending_cells(grid, suite_name, batch, log, ("perplexity",))
  fidelity = _pending_fidelity(grid, suite_name, batch, log)
  if not cells and not fidelity:
    return
  conts = [list(i.continuation) for i in batch]
  needs_capture = any(grid.scorers[n].needs_prefill_attention
                      for n, b, _ in cells + fidelity if b != FULL)
  chunked = grid.protocol == "chunked"
  context = None if chunked and not fidelity and all(
      b != FULL for _, b, _ in cells) else (
      eviction_lib.prefill_context(model, [list(i.prompt) for i in batch],
                                   capture=needs_capture))
  importance = None
  # A cell with fidelity pending gets its perplexity from that pass.
  for name, budget, eviction in [c for c in cells if c not in fidelity]:
    scorer = _scorer_of(grid, name)
    if scorer.needs_future and importance is None:
      importance = _oracle_importance(model, batch, conts, max(map(len, conts)))
    source = context if (budget == FULL or not chunked) else [
        list(i.prompt) for i in batch]
    if source is None:
      source = [list(i.prompt) for i in batch]
    ll, stats = eviction_lib.continuation_log_likelihood(
        model, scorer, eviction, source, conts, importance=importance,
        rng=jax.random.fold_in(rng, _cell_seed(name, budget)))
    log.add(_perplexity_row(suite_name, item, grid, (name, budget),
                            float(-np.sum(x)), len(x),
                            stats["cache_bytes"] / len(batch),
                            value=float(np.exp(-np.mean(x))))
            for item, x in zip(batch, ll))
  if fidelity:
    if importance is None and any(_scorer_of(grid, n).needs_future
                                  for n, _, _ in fidelity):
      importance = _oracle_importance(model, batch, conts, max(map(len, conts)))
    _log_fidelity(model, grid, suite_name, batch, log, rng, fidelity, context,
                  [list(i.prompt) for i in batch], conts, importance,
                  perplexity=True)


def _perplexity_row(suite_name, item, grid, cell, nll, tokens, cache_bytes,
                    value=None):
  """One sample's perplexity row of a (scorer, budget) cell: nll is the
  summed negative log-likelihood of its `tokens` reference tokens; value
  exp(nll / tokens) unless given."""
  name, budget = cell
  return dict(suite=suite_name, sample=item.sample.id, group=item.group,
              scorer=name, budget=budget, settings=grid.settings(name),
              **_tag(cell, grid), metric="perplexity", nll=nll, tokens=tokens,
              value=float(np.exp(nll / tokens)) if value is None else value,
              cache_bytes=cache_bytes)


def _run_attention_cost(model, grid, suite_name, batch, log, rng):
  """Each scorer's normalised future-attention cost per (layer, KV head)."""
  names = [n for n in grid.scorers
           if not all(log.has(suite=suite_name, sample=i.sample.id, scorer=n,
                              budget="all", protocol="ranking",
                              allocation="ranking", metric="normalised_cost",
                              settings=grid.settings(n)) for i in batch)]
  shares = _pending_shares(grid, suite_name, batch, log)
  if not names and not shares:
    return
  max_new = max(i.max_new_tokens for i in batch)
  context = eviction_lib.prefill_context(
      model, [list(i.prompt) for i in batch], capture=True)
  full, _ = eviction_lib.generate_compressed(
      model, scorers_lib.get_scorer("knorm"), eviction_lib.Eviction(None),
      context, max_new)
  importance = _oracle_importance(model, batch, full, max_new)
  views = context.views(model.config, importance)
  lengths = jnp.asarray(context.lengths)
  for name in dict.fromkeys(names + shares):
    scores = eviction_lib.score_layers(grid.scorers[name], views,
                                       jax.random.fold_in(rng, len(name)))
    if name in shares:
      _log_evicted_share(model, grid, suite_name, batch, log, name, views,
                         scores, lengths)
    if name not in names:
      continue
    costs, counts = [], []
    for view, s in zip(views, scores):
      cost, informative = _ranking_cost(s, view.importance, view.positions,
                                        lengths, grid.protected)
      costs.append(np.asarray(cost))                       # [B, K]
      counts.append(np.asarray(informative))
    costs = np.stack(costs, 1)                             # [B, L, K]
    counts = np.stack(counts, 1)
    log.add(dict(suite=suite_name, sample=item.sample.id, group=item.group,
                 scorer=name, budget="all", protocol="ranking",
                 allocation="ranking", metric="normalised_cost",
                 settings=grid.settings(name),
                 per_head=np.where(counts[i], costs[i], np.nan).tolist(),
                 value=float(np.nanmean(np.where(counts[i], costs[i],
                                                 np.nan))))
            for i, item in enumerate(batch))


def _share_budgets(grid) -> tuple[int, ...]:
  """The evicted-share budgets (_evicted_share.BUDGETS) the protected set
  fits in."""
  need = grid.protected.num_sinks + grid.protected.num_recent
  return tuple(b for b in evicted_share_lib.BUDGETS if b >= need)


def _pending_shares(grid, suite_name, batch, log) -> list[str]:
  """Scorers lacking evicted-share rows (none unless asked for)."""
  if not grid.evicted_share:
    return []
  return [n for n in grid.scorers
          if not all(log.has(suite=suite_name, sample=i.sample.id, scorer=n,
                             budget=b, protocol="ranking",
                             allocation="ranking", metric="evicted_share",
                             settings=grid.settings(n))
                     for i in batch for b in _share_budgets(grid))]


def _log_evicted_share(model, grid, suite_name, batch, log, name, views,
                       scores, lengths):
  """Per sample and budget b of _share_budgets: each head's share of its
  cached future importance that keeping the top b evicts ([L, K], NaN where
  not counted), the sample's geometric mean over counted heads as value,
  and the global layers (window None) for the report's split."""
  budgets = _share_budgets(grid)
  per_layer = [np.asarray(evicted_share_lib.evicted_share(
      s, view.importance, view.positions, lengths, budgets,
      grid.protected.num_sinks, grid.protected.num_recent)[0])
               for view, s in zip(views, scores)]            # L x [B, K, N]
  shares = np.stack(per_layer, 1)                              # [B, L, K, N]
  glob = [i for i in range(model.config.num_layers)
          if model.config.layer_window(i) is None]
  rows = []
  for i, item in enumerate(batch):
    for j, b in enumerate(budgets):
      geo = evicted_share_lib.aggregate_evicted_share(shares[i, ..., j:j + 1],
                                                      glob)
      rows.append(dict(
          suite=suite_name, sample=item.sample.id, group=item.group,
          scorer=name, budget=b, protocol="ranking", allocation="ranking",
          metric="evicted_share", settings=grid.settings(name),
          per_head=shares[i, ..., j].tolist(), global_layers=glob,
          value=float(geo["all"][0])))
  log.add(rows)


@functools.partial(jax.jit, static_argnames=("protected",))
def _ranking_cost(scores, importance, positions, lengths,
                  protected: cache_lib.Protected):
  """[B, K] normalised cost of each head's ranking and whether the head had
  any future importance to lose; the protected tokens are not ranked."""
  ranked = (positions >= protected.num_sinks) & (
      positions < lengths[:, None, None] - protected.num_recent)
  order = objective.deterministic_order(scores, ranked)
  cost = objective.normalised_cost(order, importance, ranked)
  informative = objective.oracle_cost(importance, ranked) > 1e-30
  return cost, informative


EPICACHE = _paired.EPICACHE           # Episodes scored by their medoids.
EPICACHE_KVP = _paired.EPICACHE_KVP   # The same, KVP blended into the score.


def _episodic_cells(grid: Grid, settings: dict):
  """(name, budget, Eviction, scorer, episodic) of an episodic suite.

  The full cache first (if the grid has it); then, unless the suite says
  plain=False, every grid scorer as a plain baseline (the conversation
  compressed once block by block, every question read from that cache);
  then EpiCache (episodes, SnapKV's attention of each episode's medoids)
  and, with "kvp" in the grid and a blend_weight, "epicache+kvp" (KVP
  blended with the medoid's attention). Every compressed cell is block-wise
  (eval.chunk_size) at every grid budget.
  """
  if grid.include_full:
    yield FULL, FULL, eviction_lib.Eviction(None, protected=grid.protected), \
        None, False
  cells = []
  if settings.get("plain", True):
    cells += [(n, s, False) for n, s in grid.scorers.items()]
  cells.append((EPICACHE, scorers_lib.get_scorer("snapkv"), True))
  if "kvp" in grid.scorers and settings.get("blend_weight") is not None:
    # The blend's results depend on the policy file as KVP's do.
    grid.identity.setdefault(EPICACHE_KVP, grid.identity.get("kvp"))
    cells.append((EPICACHE_KVP, eviction_lib.MedoidBlendScorer(
        learned=grid.scorers["kvp"],
        weight=float(settings["blend_weight"])), True))
  for name, scorer, episodic in cells:
    for b in grid.budgets:
      yield name, b, eviction_lib.Eviction(
          b, protocol="chunked", chunk_size=grid.chunk_size,
          protected=grid.protected), scorer, episodic


def _episodic_layer_budgets(model, settings, eviction, sample):
  """Sensitivity-aware per-layer budgets from the suite's layer profile, or
  None. The profile is made once per model (on `sample`'s context, with
  keydiff at the first budget asked for) and reused from its file."""
  path = settings.get("layer_profile")
  if not path:
    return None
  context = model.tokenizer.encode(sample.context, add_bos=True)
  profile_eviction = eviction_lib.Eviction(
      eviction.budget, protocol="chunked", chunk_size=eviction.chunk_size,
      protected=eviction.protected)
  sensitivity = eviction_lib.load_or_profile(
      path, model, [context], scorers_lib.get_scorer("keydiff"),
      profile_eviction)
  floor = max(eviction.protected.size,
              int(float(settings.get("min_fraction", 0.25)) *
                  eviction.budget))
  return eviction_lib.layer_budgets(
      sensitivity, eviction.budget * model.config.num_layers,
      alpha=float(settings.get("alpha", 1.0)), floor=floor,
      caps=eviction_lib.window_caps(model.config, floor))


def _run_episodic(model, grid, suite_name, batch, log, rng):
  """Long conversations, conversation by conversation of the batch: the
  full cache and the plain cells prefill each conversation once (the full
  cache keeps it whole, a plain cell compresses it block by block) and
  answer every question from that state (kvp_jax.eviction.
  answer_compressed); EpiCache cells go through episodic caches
  (kvp_jax.eviction.answer_conversation)."""
  settings = batch[0].sample.metadata[_suites.EPISODIC_KEY]
  episodic = eviction_lib.EpisodicSettings(**settings.get("episodic", {}))
  conversations: dict[str, list] = {}
  for item in batch:
    conversations.setdefault(item.sample.metadata["conversation_id"],
                             []).append(item)
  for items in conversations.values():
    for name, budget, eviction, scorer, by_episode in _episodic_cells(
        grid, settings):
      tag = _tag((name, budget), grid)
      base = dict(suite=suite_name, scorer=name, budget=budget,
                  settings=grid.settings(name), metric="accuracy", **tag)
      todo = [i for i in items if not log.has(sample=i.sample.id, **base)]
      if not todo:
        continue
      cell_rng = jax.random.fold_in(rng, _cell_seed(name, budget))
      if by_episode:
        result = eviction_lib.answer_conversation(
            model, scorer, eviction, [i.sample for i in todo], episodic,
            layer_budgets=_episodic_layer_budgets(model, settings, eviction,
                                                  todo[0].sample),
            rng=cell_rng)
        for row in result:
          row["routed_to_fact"] = row["episode"] == row["fact_episode"]
      else:                       # The full cache, or a plain baseline.
        result = eviction_lib.answer_compressed(
            model, scorer or scorers_lib.get_scorer("knorm"), eviction,
            [i.sample for i in todo], rng=cell_rng)
      log.add(dict(base, group=item.group, **row)
              for item, row in zip(todo, result))


RUNNERS = {"ruler": _run_generation, "perplexity": _run_perplexity,
           "attention_cost": _run_attention_cost}
RUNNERS["episodic"] = _run_episodic


def run_grid(model: Pretrained, grid: Grid, suites: Sequence[dict],
             output_dir: str | os.PathLike[str], *,
             progress: bool = True, title: str = "",
             compute: bool = True,
             references: Sequence[str] = ("kvp",)) -> list[dict]:
  """Runs every suite, then writes results.jsonl, results.md and plots.

  With compute=False nothing runs: the files are written from the samples
  the log holds so far (a look at a long grid part-way). `references`: the
  policies each extra policy is also compared with (EvalConfig.references).
  Returns the aggregated result rows.
  """
  out = Path(output_dir)
  out.mkdir(parents=True, exist_ok=True)
  multi = jax.process_count() > 1
  log = (MergedLog if multi else SampleLog)(out / "samples.jsonl")
  rng = jax.random.key(grid.seed)
  for index, suite in enumerate(suites if compute else ()):
    name = _suites.suite_name(suite, index)
    items = _suites.build_suite(suite, model.tokenizer)
    batches = list(_batches(items, grid.batch_size, suite["kind"]))
    bar = tqdm(_process_batches(batches, log), desc=f"evaluating {name}",
               unit="batch", disable=not progress,
               total=len(distributed.process_shard(len(batches), True)))
    for batch in bar:
      RUNNERS[suite["kind"]](model, grid, name, batch, log, rng)
  current = [r for r in log.rows if r.get("settings") == grid.settings(
      r["scorer"]) and (r["protocol"] in (FULL, "ranking") or (
          r["protocol"] == grid.protocol and
          r["allocation"] == grid.allocation))]
  if multi and not distributed.is_primary():
    return distributed.gather_rows([])       # Process 0's rows.
  rows = _report.aggregate(current)
  extra = _verdicts.write(current, rows, out, references=references)
  _report.write(rows, out, title=title, extra=extra)
  return distributed.gather_rows(rows) if multi else rows


def _configured_protected(config) -> cache_lib.Protected | None:
  """The config's protected set (its `input` section), if it names one."""
  section = config.get("input") if hasattr(config, "get") else None
  if section is None or "num_sinks" not in section:
    return None
  return cache_lib.Protected.from_config(section)


def evaluate(config, workdir: str | os.PathLike[str], *,
             model: Pretrained | None = None, progress: bool = True,
             compute: bool = True) -> list[dict]:
  """The `eval` section of an experiment config, run in a workdir.

  The KVP policy is `eval.policy` ("shipped": the one shipped for the
  model, kvp_jax.policy.shipped_policy), else <workdir>/policy.kvp, and
  `eval.policies` add more (scorers "kvp_<label>"); results go to
  `eval.output_dir`, else <workdir>/eval. The protected tokens are the
  policies' (a config whose `input` section names other ones is refused),
  else the config's. compute=False writes the report of the samples
  logged so far and runs nothing (run_grid).
  """
  from kvp_jax.model import load_model  # pylint: disable=g-import-not-at-top
  ec = EvalConfig.from_config(config)       # Before the model loads.
  workdir = Path(workdir)
  model = model or load_model(config.model)
  if model.tokenizer is None:
    raise ValueError("evaluation needs a model with a tokenizer")
  policies = {name: policy_lib.resolve_policy_path(
      path, model.config.name, model.fingerprint)
              for name, path in ec.policy_paths(
                  str(workdir / "policy.kvp")).items()}
  identity = {"model": model.fingerprint}
  for name, path in policies.items():
    if Path(path).is_file():
      identity[name] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
  scorers, protected = make_scorers(list(ec.all_scorers), policies, model)
  configured = _configured_protected(config)
  if protected is None:
    protected = configured or cache_lib.Protected()
  elif configured is not None:
    configured.check_same(protected, "the policies "
                          + ", ".join(map(str, policies.values())))
  grid = Grid(
      scorers=scorers, protected=protected,
      budgets=ec.budgets, protocol=ec.protocol, allocation=ec.allocation,
      chunk_size=ec.chunk_size, decode_interval=ec.decode_interval,
      batch_size=ec.batch_size, include_full=ec.include_full, seed=ec.seed,
      identity=identity, metrics=ec.metrics)
  for b in grid.budgets:                       # Fail early on a bad budget.
    eviction_lib.Eviction(b, protocol=grid.protocol,
                          allocation=grid.allocation, protected=protected)
  suites = ec.suite_dicts()
  out = Path(ec.output_dir) if ec.output_dir else workdir / "eval"
  title = (f"{model.config.name}: protocol {grid.protocol}, allocation "
           f"{grid.allocation}")
  if not compute:
    title += (" (report of the samples logged so far; the grid is not "
              "necessarily complete)")
  return run_grid(model, grid, suites, out, progress=progress, title=title,
                  compute=compute, references=ec.references)
