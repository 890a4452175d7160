"""The evaluation grid: scorers x budgets x suites, resumable.

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
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from kvp_jax import _files
from kvp_jax import distributed
from kvp_jax import cache as cache_lib
from kvp_jax import eviction as eviction_lib
from kvp_jax import objective
from kvp_jax import scorers as scorers_lib
from kvp_jax import traces as traces_lib
from kvp_jax.evaluation import _report
from kvp_jax.evaluation import _suites
from kvp_jax.model import Pretrained
from kvp_jax.samples import scoring

FULL = "full"   # The uncompressed cache's scorer / budget label.


def make_scorers(names: Sequence[str], policy_path: str | os.PathLike[str],
                 model: Pretrained
                 ) -> tuple[dict[str, scorers_lib.Scorer],
                            cache_lib.Protected | None]:
  """Scorers by name; "kvp" loads the policy artifact (checked against the
  model it will score). Also returns the policy's protected set (None
  without "kvp")."""
  out, protected = {}, None
  for name in names:
    if name == "kvp":
      out[name], artifact = scorers_lib.load_policy(policy_path, model)
      protected = artifact.protected
    else:
      out[name] = scorers_lib.get_scorer(name)
  return out, protected


class SampleLog(_files.JsonlLog):
  """Append-only JSONL of per-sample results, keyed for resuming."""

  KEY = ("suite", "sample", "scorer", "budget", "protocol", "allocation",
         "settings")

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


def _batches(items: Sequence[_suites.Item], size: int):
  """Items grouped into batches of similar prompt length (same bucket)."""
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


def _pending_cells(grid, suite_name, batch, log):
  """The grid's (scorer, budget, eviction) cells some sample of the batch
  still lacks in the log."""
  return [c for c in grid.evictions()
          if not all(log.has(suite=suite_name, sample=i.sample.id,
                             scorer=c[0], budget=c[1],
                             settings=grid.settings(c[0]),
                             **_tag(c, grid)) for i in batch)]


def _run_generation(model, grid, suite_name, batch, log, rng):
  """RULER-style: generate with every cell, score each answer."""
  max_new = max(i.max_new_tokens for i in batch)
  cells = _pending_cells(grid, suite_name, batch, log)
  if not cells:
    return
  needs_capture = any(grid.scorers[n].needs_prefill_attention
                      for n, b, _ in cells if b != FULL)
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


def _cell_seed(name, budget) -> int:
  """A stable per-cell seed (Python's hash() of a str changes per process)."""
  return zlib.crc32(f"{name}|{budget}".encode()) % 2**31


def _tag(cell, grid):
  """A cell's protocol and allocation (the full cache has neither)."""
  return ({"protocol": FULL, "allocation": FULL} if cell[1] == FULL
          else {"protocol": grid.protocol, "allocation": grid.allocation})


def _run_perplexity(model, grid, suite_name, batch, log, rng):
  cells = _pending_cells(grid, suite_name, batch, log)
  if not cells:
    return
  conts = [list(i.continuation) for i in batch]
  needs_capture = any(grid.scorers[n].needs_prefill_attention
                      for n, b, _ in cells if b != FULL)
  chunked = grid.protocol == "chunked"
  context = None if chunked and all(b != FULL for _, b, _ in cells) else (
      eviction_lib.prefill_context(model, [list(i.prompt) for i in batch],
                                   capture=needs_capture))
  importance = None
  for name, budget, eviction in cells:
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
    log.add(dict(suite=suite_name, sample=item.sample.id, group=item.group,
                 scorer=name, budget=budget, settings=grid.settings(name),
                 **_tag((name, budget), grid),
                 metric="perplexity", nll=float(-np.sum(x)), tokens=len(x),
                 value=float(np.exp(-np.mean(x))),
                 cache_bytes=stats["cache_bytes"] / len(batch))
            for item, x in zip(batch, ll))


def _run_attention_cost(model, grid, suite_name, batch, log, rng):
  """Each scorer's normalised future-attention cost per (layer, KV head)."""
  names = [n for n in grid.scorers
           if not all(log.has(suite=suite_name, sample=i.sample.id, scorer=n,
                              budget="all", protocol="ranking",
                              allocation="ranking",
                              settings=grid.settings(n)) for i in batch)]
  if not names:
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
  for name in names:
    scores = eviction_lib.score_layers(grid.scorers[name], views,
                                       jax.random.fold_in(rng, len(name)))
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


RUNNERS = {"ruler": _run_generation, "perplexity": _run_perplexity,
           "attention_cost": _run_attention_cost}


def run_grid(model: Pretrained, grid: Grid, suites: Sequence[dict],
             output_dir: str | os.PathLike[str], *,
             progress: bool = True, title: str = "") -> list[dict]:
  """Runs every suite, then writes results.jsonl, results.md and plots.

  Returns the aggregated result rows.
  """
  out = Path(output_dir)
  out.mkdir(parents=True, exist_ok=True)
  multi = jax.process_count() > 1
  log = (MergedLog if multi else SampleLog)(out / "samples.jsonl")
  rng = jax.random.key(grid.seed)
  for index, suite in enumerate(suites):
    name = _suites.suite_name(suite, index)
    items = _suites.build_suite(suite, model.tokenizer)
    batches = list(_batches(items, grid.batch_size))
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
  _report.write(rows, out, title=title)
  return distributed.gather_rows(rows) if multi else rows


def _configured_protected(config) -> cache_lib.Protected | None:
  """The config's protected set (its `input` section), if it names one."""
  section = config.get("input") if hasattr(config, "get") else None
  if section is None or "num_sinks" not in section:
    return None
  return cache_lib.Protected.from_config(section)


def evaluate(config, workdir: str | os.PathLike[str], *,
             model: Pretrained | None = None, progress: bool = True
             ) -> list[dict]:
  """The `eval` section of an experiment config, run in a workdir.

  The KVP policy is `eval.policy`, else <workdir>/policy.kvp; results go to
  `eval.output_dir`, else <workdir>/eval. The protected tokens are the
  policy's (a config whose `input` section names other ones is refused),
  else the config's.
  """
  from kvp_jax.model import load_model  # pylint: disable=g-import-not-at-top
  ec = config.eval
  workdir = Path(workdir)
  model = model or load_model(config.model)
  if model.tokenizer is None:
    raise ValueError("evaluation needs a model with a tokenizer")
  policy = ec.policy or workdir / "policy.kvp"
  identity = {"model": model.fingerprint}
  if "kvp" in ec.scorers and Path(policy).is_file():
    identity["kvp"] = hashlib.sha256(Path(policy).read_bytes()).hexdigest()
  scorers, protected = make_scorers(list(ec.scorers), policy, model)
  configured = _configured_protected(config)
  if protected is None:
    protected = configured or cache_lib.Protected()
  elif configured is not None:
    configured.check_same(protected, f"the policy {policy}")
  grid = Grid(
      scorers=scorers, protected=protected,
      budgets=tuple(int(b) for b in ec.budgets), protocol=ec.protocol,
      allocation=ec.allocation, chunk_size=int(ec.chunk_size),
      decode_interval=int(ec.decode_interval),
      batch_size=int(ec.batch_size), include_full=bool(ec.include_full),
      seed=int(ec.seed), identity=identity)
  for b in grid.budgets:                       # Fail early on a bad budget.
    eviction_lib.Eviction(b, protocol=grid.protocol,
                          allocation=grid.allocation, protected=protected)
  suites = [dict(s) if not hasattr(s, "to_dict") else s.to_dict()
            for s in ec.suites]
  out = Path(ec.output_dir) if ec.output_dir else workdir / "eval"
  title = (f"{model.config.name}: protocol {grid.protocol}, allocation "
           f"{grid.allocation}")
  return run_grid(model, grid, suites, out, progress=progress, title=title)
