"""Paired comparisons of two scorers over the same samples, with a bootstrap.

Every scorer of an evaluation sees the same samples, so two scorers are
compared on their per-sample differences d_i = a_i - b_i (i = 1..n). The
95% interval of the mean difference is the percentile bootstrap: resample
the n differences with replacement, take the mean, and read the 2.5% and
97.5% quantiles of those means. When n^n is at most the number of resamples
every resample is enumerated instead (the exact bootstrap distribution).

The verdict is "not distinguishable" when the interval contains 0, else
"better" or "worse" for the first scorer (a), in the metric's direction:
lower is better for perplexity, the normalised cost, KL and evicted shares.

  paired_bootstrap(a, b)            one pair of [n] arrays -> PairedDifference
  kvp_against_baselines(rows)      per (suite, budget, metric): KVP against
                                    the best query-free and the best
                                    query-aware baseline
  (their markdown tables: _paired_tables)
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Collection, Mapping, Sequence

import numpy as np

from kvp_jax import scorers as scorers_lib
from kvp_jax.evaluation import _multiplicity

BETTER = "better"
WORSE = "worse"
TIE = "not distinguishable"

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
# The scorer names of a grid's extra policies (eval.policies).
EXTRA_POLICY_PREFIX = "kvp_"


def is_extra_policy(scorer: str) -> bool:
  """An extra policy of the grid ("kvp_<label>", eval.policies)."""
  return scorer.startswith(EXTRA_POLICY_PREFIX)

# Resampled indices held in memory at once (bounds the [m, n] index block).
_CHUNK_ELEMENTS = 1 << 22
# The largest exact enumeration (n^n resamples) allowed.
_MAX_EXACT = 1 << 20


@dataclasses.dataclass(frozen=True)
class PairedDifference:
  """The mean of a - b over paired samples and its bootstrap interval.

  Attributes:
    mean: mean over samples of a_i - b_i.
    low, high: the bootstrap percentile interval of the mean (NaN when
      fewer than 2 samples).
    verdict: BETTER / WORSE (for a, in the metric's direction) or TIE (the
      interval contains 0, or fewer than 2 samples).
    num_samples: n.
    exact: the interval comes from enumerating all n^n resamples.
    p_value: the two-sided bootstrap p-value of a zero mean difference
      (_multiplicity.bootstrap_p_value; NaN when fewer than 2 samples).
  """
  mean: float
  low: float
  high: float
  verdict: str
  num_samples: int
  exact: bool
  p_value: float = float("nan")


def _exact_means(d: np.ndarray) -> np.ndarray:
  """[n^n] means of every resample (index tuples in mixed radix n)."""
  n = d.size
  code = np.arange(n ** n, dtype=np.int64)[:, None]                # [N, 1]
  digits = (code // n ** np.arange(n, dtype=np.int64)[None]) % n   # [N, n]
  return d[digits].mean(axis=1)


def _sampled_means(d: np.ndarray, num_resamples: int,
                   seed: int) -> np.ndarray:
  """[num_resamples] means of resamples drawn with replacement (seeded)."""
  n = d.size
  rng = np.random.default_rng(seed)
  rows = max(1, _CHUNK_ELEMENTS // n)
  out = np.empty(num_resamples, np.float64)
  for start in range(0, num_resamples, rows):
    m = min(rows, num_resamples - start)
    idx = rng.integers(0, n, size=(m, n))                           # [m, n]
    out[start:start + m] = d[idx].mean(axis=1)
  return out


def verdict(low: float, high: float, lower_is_better: bool) -> str:
  """BETTER / WORSE for the first scorer of a - b, TIE if low <= 0 <= high."""
  if not (np.isfinite(low) and np.isfinite(high)) or low <= 0.0 <= high:
    return TIE
  return BETTER if (low > 0.0) != lower_is_better else WORSE


def paired_bootstrap(a: Sequence[float] | np.ndarray,
                     b: Sequence[float] | np.ndarray, *,
                     lower_is_better: bool = False,
                     num_resamples: int = 10000, confidence: float = 0.95,
                     seed: int = 0, exact: bool | None = None
                     ) -> PairedDifference:
  """Mean of a - b over paired samples, with a percentile bootstrap interval.

  Args:
    a: [n] per-sample values of the first method (e.g. KVP).
    b: [n] the second method's values on the same samples, same order.
    lower_is_better: the metric's direction (perplexity, KL: True); it only
      decides between BETTER and WORSE.
    num_resamples: bootstrap resamples (>= 2000).
    confidence: the interval's coverage, in (0, 1).
    seed: numpy seed of the resampling: the same inputs and seed give the
      same interval.
    exact: True enumerates all n^n resamples (up to 2^20 of them); False
      samples num_resamples; None (default) enumerates when
      n^n <= num_resamples.
  Returns:
    PairedDifference (mean, low, high, verdict, num_samples, exact). The
    quantiles are numpy's default (linear interpolation between order
    statistics of the resampled means).
  Raises:
    ValueError: shapes differ or are not 1-d, non-finite values, too few
      resamples, or a confidence outside (0, 1).
  """
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  if a.ndim != 1 or a.shape != b.shape:
    raise ValueError(f"paired values must be two 1-d arrays of one length, "
                     f"got shapes {a.shape} and {b.shape}")
  if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
    raise ValueError("paired values must be finite")
  if num_resamples < 2000:
    raise ValueError(f"num_resamples={num_resamples} is below 2000")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence={confidence} must be in (0, 1)")
  d = a - b
  n = d.size
  mean = float(d.mean()) if n else float("nan")
  if n < 2:
    return PairedDifference(mean, float("nan"), float("nan"), TIE, n, False)
  if exact is None:
    exact = n ** n <= num_resamples     # Python ints: no overflow.
  if exact and n ** n > _MAX_EXACT:
    raise ValueError(f"exact bootstrap of n={n} samples needs n^n = {n ** n} "
                     f"resamples (at most {_MAX_EXACT})")
  means = _exact_means(d) if exact else _sampled_means(d, num_resamples, seed)
  alpha = 1.0 - confidence
  low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
  low, high = float(low), float(high)
  return PairedDifference(mean, low, high,
                          verdict(low, high, lower_is_better), n, bool(exact),
                          _multiplicity.bootstrap_p_value(means))


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
  order of their ids (so the result does not depend on the rows' order).

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
  for r in rows:
    key = tuple(str(r.get(k)) for k in _CELL)
    per_sample = cells[key].setdefault(r["scorer"], {})
    sample = str(r["sample"])
    if sample in per_sample:
      raise ValueError(f"two rows for scorer {r['scorer']!r}, sample "
                       f"{sample!r} in cell {dict(zip(_CELL, key))}")
    per_sample[sample] = float(r["value"])
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
        diff = paired_bootstrap(a, b, lower_is_better=lower,
                                num_resamples=num_resamples,
                                confidence=confidence, seed=seed)
        out.append(dict(
            zip(_CELL, key), method=kvp, family=family, baseline=best,
            num_samples=diff.num_samples, kvp_mean=float(a.mean()),
            baseline_mean=float(b.mean()), difference=diff.mean,
            low=diff.low, high=diff.high, verdict=diff.verdict,
            lower_is_better=lower, exact=diff.exact, p_value=diff.p_value))
  return out


def budget_order(budget: str) -> tuple:
  """Numeric budgets first, in order; then the named ones ("full", "all")."""
  return (0, int(budget)) if budget.isdigit() else (1, budget)


def _cell_order(key: tuple) -> tuple:
  suite, budget, *rest = key
  return (suite, budget_order(budget), *rest)
