"""Paired comparisons of two scorers over the same samples, cell by cell.

Every scorer of an evaluation sees the same samples, so KVP and a baseline
are compared on their per-sample differences with a bootstrap interval
(kvp_jax.evaluation._bootstrap): over samples, or over clusters of samples
when the rows name one (`cluster`: the conversation of a question, so the
interval resamples conversations, not questions). Lower is better for
perplexity, the normalised cost, KL and evicted shares.

  kvp_against_baselines(rows)      per (suite, budget, metric): KVP against
                                    the best query-free and the best
                                    query-aware baseline (or every one)
  (their markdown tables: _paired_tables)
"""

from __future__ import annotations

import collections
from typing import Collection, Mapping, Sequence

import numpy as np

from kvp_jax import scorers as scorers_lib
from kvp_jax.evaluation._bootstrap import paired_bootstrap
from kvp_jax.evaluation._bootstrap import paired_cluster_bootstrap

# Metrics of the result rows where a smaller value is better.
LOWER_IS_BETTER = frozenset({
    "perplexity", "nll", "normalised_cost", "kl", "kl_divergence",
    "evicted_share"})

# Episodic suites' cells: EpiCache (episodes scored by their medoids' SnapKV
# attention) and EpiCache with KVP blended into its score.
EPICACHE = "epicache"
EPICACHE_KVP = "epicache+kvp"


def baseline_families() -> dict[str, tuple[str, ...]]:
  """Family name -> its scorers: the registered scorers of each baseline
  family (by what each declares, kvp_jax.scorers.family_of), then the
  episodic methods."""
  families = {f: scorers_lib.scorers_in(f)
              for f in scorers_lib.BASELINE_FAMILIES}
  families["episodic"] = (EPICACHE,)
  return families
# Methods compared beside KVP, each against its own families.
OTHER_METHODS = {EPICACHE_KVP: {"episodic": (EPICACHE,)}}
# Episodic suites' plain baselines may also compress each conversation once
# (protocol ONCE, after a full prefill): the family EpiCache's methods are
# compared with across protocols (against_compress_once).
ONCE = "once"
CHUNKED = "chunked"
COMPRESS_ONCE = "compress_once"
# The scorer names of a grid's extra policies (eval.policies).
EXTRA_POLICY_PREFIX = "kvp_"


def is_extra_policy(scorer: str) -> bool:
  """An extra policy of the grid ("kvp_<label>", eval.policies)."""
  return scorer.startswith(EXTRA_POLICY_PREFIX)

_CELL = ("suite", "budget", "metric", "protocol", "allocation")


def kvp_against_baselines(
    rows: Sequence[Mapping], *, kvp: str = "kvp",
    families: Mapping[str, Collection[str]] | None = None,
    lower_is_better: Collection[str] = LOWER_IS_BETTER,
    num_resamples: int = 10000, confidence: float = 0.95, seed: int = 0,
    every: bool = False) -> list[dict]:
  """KVP against the best baseline of each family, cell by cell, paired
  (every=True: against every baseline of each family, so that a claim over
  a family need not pick its best on the same data).

  A cell is a (suite, budget, metric, protocol, allocation) of the
  per-sample rows (samples.jsonl, see _log.SampleLog; rows missing
  protocol / allocation share the cell "None"). In each cell the best
  baseline of a family is the one with the best mean `value` over its
  samples in the cell (ties: the first name in sorted order); KVP minus that
  baseline is then bootstrapped over the samples both have, taken in sorted
  order of their ids (so the result does not depend on the rows' order),
  by cluster when every shared sample's rows name one (`cluster`).

  Args:
    rows: per-sample dicts with at least suite, sample, scorer, budget,
      metric, value (protocol and allocation when present). Other scorers
      (full, oracle, ...) are ignored.
    kvp: the scorer compared.
    families: family name -> its scorer names; default
      baseline_families() (query_free, query_aware, episodic).
    lower_is_better: metric names where smaller is better.
    num_resamples, confidence, seed: as paired_bootstrap (one seed for
      every cell).
    every: compare with each scorer of each family, not only its best.
  Returns:
    One dict per (cell, family) where KVP and some baseline of the family
    share at least one sample, sorted by cell: the cell's keys, method
    (`kvp`), family,
    baseline, num_samples (shared), kvp_mean and baseline_mean (over the
    shared samples), difference (kvp - baseline), low, high, verdict,
    lower_is_better, exact.
  Raises:
    ValueError: a cell holds two rows of one (scorer, sample).
  """
  families = baseline_families() if families is None else families
  cells = collections.defaultdict(dict)      # cell -> scorer -> sample -> v.
  cluster_of = {}                            # (suite, sample) -> cluster.
  for r in rows:
    key = tuple(str(r.get(k)) for k in _CELL)
    per_sample = cells[key].setdefault(r["scorer"], {})
    sample = str(r["sample"])
    if sample in per_sample:
      raise ValueError(f"two rows for scorer {r['scorer']!r}, sample "
                       f"{sample!r} in cell {dict(zip(_CELL, key))}")
    per_sample[sample] = float(r["value"])
    if r.get("cluster") is not None:
      cluster_of[(key[0], sample)] = str(r["cluster"])
  out = []
  for key in sorted(cells, key=_cell_order):
    by_scorer = cells[key]
    if kvp not in by_scorer:
      continue
    metric = key[2]
    lower = metric in lower_is_better
    ours = by_scorer[kvp]
    for family, names in families.items():
      means = {s: float(np.mean(list(by_scorer[s].values())))
               for s in sorted(names) if s in by_scorer and s != kvp}
      if not means:
        continue
      compared = (sorted(means) if every else
                  [(min if lower else max)(means, key=means.get)])
      for best in compared:
        shared = sorted(set(ours) & set(by_scorer[best]))
        if not shared:
          continue
        a = np.asarray([ours[s] for s in shared])
        b = np.asarray([by_scorer[best][s] for s in shared])
        settings = dict(lower_is_better=lower, num_resamples=num_resamples,
                        confidence=confidence, seed=seed)
        if all((key[0], s) in cluster_of for s in shared):
          diff = paired_cluster_bootstrap(
              a, b, [cluster_of[(key[0], s)] for s in shared], **settings)
          clustered = {"num_clusters": diff.num_clusters}
        else:
          diff, clustered = paired_bootstrap(a, b, **settings), {}
        out.append(dict(
            zip(_CELL, key), method=kvp, family=family, baseline=best,
            num_samples=diff.num_samples, kvp_mean=float(a.mean()),
            baseline_mean=float(b.mean()), difference=diff.mean,
            low=diff.low, high=diff.high, verdict=diff.verdict,
            lower_is_better=lower, exact=diff.exact, p_value=diff.p_value,
            **clustered))
  return out


def against_compress_once(rows: Sequence[Mapping], **settings) -> list[dict]:
  """EpiCache and EpiCache + KVP (block by block, one cache per episode)
  against each plain baseline that compresses the whole conversation once
  (protocol ONCE) at the same budget, paired as kvp_against_baselines (by
  conversation where rows name one). Every baseline is compared, none
  picked on the data; each entry's family is "compress_once/<baseline>"
  and its protocol ONCE (the comparison's cell, a multiplicity family of
  its own).

  settings: num_resamples, confidence, seed, as kvp_against_baselines.
  """
  methods = (EPICACHE, EPICACHE_KVP)
  once = [r for r in rows if str(r.get("protocol")) == ONCE
          and r["scorer"] not in methods]
  names = sorted({r["scorer"] for r in once})
  # EpiCache reads block by block (rows of an older grid may carry the
  # grid's protocol instead; only the block-by-block ones are compared).
  cells = once + [dict(r, protocol=ONCE) for r in rows
                  if r["scorer"] in methods
                  and str(r.get("protocol")) == CHUNKED]
  families = {f"{COMPRESS_ONCE}/{n}": (n,) for n in names}
  return [c for method in methods if families
          for c in kvp_against_baselines(cells, kvp=method,
                                         families=families, **settings)]


def budget_order(budget: str) -> tuple:
  """Numeric budgets first, in order; then the named ones ("full", "all")."""
  return (0, int(budget)) if budget.isdigit() else (1, budget)


def _cell_order(key: tuple) -> tuple:
  suite, budget, *rest = key
  return (suite, budget_order(budget), *rest)
