"""Bootstrap intervals of a paired mean difference, and their verdicts.

Every scorer of an evaluation sees the same samples, so two scorers are
compared on their per-sample differences d_i = a_i - b_i (i = 1..n). The
95% interval of the mean difference is the percentile bootstrap: resample
the n differences with replacement, take the mean, and read the 2.5% and
97.5% quantiles of those means. When n^n is at most the number of resamples
every resample is enumerated instead (the exact bootstrap distribution).

Samples that are not independent (several questions about one
conversation) are resampled by cluster: draw C of the C clusters with
replacement and take the mean of every difference in the drawn clusters
(paired_cluster_bootstrap), so the interval reflects how much results vary
between conversations, not only between questions.

The verdict is "not distinguishable" when the interval contains 0, else
"better" or "worse" for the first scorer (a), in the metric's direction.

  paired_bootstrap(a, b)                    [n] arrays -> PairedDifference
  paired_cluster_bootstrap(a, b, clusters)  the same, clusters resampled
"""

from __future__ import annotations

import dataclasses
from typing import Hashable, Sequence

import numpy as np

from kvp_jax.evaluation import _multiplicity

BETTER = "better"
WORSE = "worse"
TIE = "not distinguishable"

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
    num_clusters: the clusters resampled (paired_cluster_bootstrap); None
      when the samples themselves were.
  """
  mean: float
  low: float
  high: float
  verdict: str
  num_samples: int
  exact: bool
  p_value: float = float("nan")
  num_clusters: int | None = None


def _every_draw(n: int) -> np.ndarray:
  """[n^n, n] every ordered draw of n indices out of n (mixed radix n)."""
  code = np.arange(n ** n, dtype=np.int64)[:, None]                # [N, 1]
  return (code // n ** np.arange(n, dtype=np.int64)[None]) % n     # [N, n]


def _sampled_draws(n: int, num_resamples: int, seed: int, statistic
                   ) -> np.ndarray:
  """[num_resamples] statistic([m, n] index draws with replacement), drawn
  in blocks (seeded)."""
  rng = np.random.default_rng(seed)
  rows = max(1, _CHUNK_ELEMENTS // n)
  out = np.empty(num_resamples, np.float64)
  for start in range(0, num_resamples, rows):
    m = min(rows, num_resamples - start)
    out[start:start + m] = statistic(rng.integers(0, n, size=(m, n)))
  return out


def _exact_means(d: np.ndarray) -> np.ndarray:
  """[n^n] means of every resample."""
  return d[_every_draw(d.size)].mean(axis=1)


def _sampled_means(d: np.ndarray, num_resamples: int,
                   seed: int) -> np.ndarray:
  """[num_resamples] means of resamples drawn with replacement (seeded)."""
  return _sampled_draws(d.size, num_resamples, seed,
                        lambda idx: d[idx].mean(axis=1))


def verdict(low: float, high: float, lower_is_better: bool) -> str:
  """BETTER / WORSE for the first scorer of a - b, TIE if low <= 0 <= high."""
  if not (np.isfinite(low) and np.isfinite(high)) or low <= 0.0 <= high:
    return TIE
  return BETTER if (low > 0.0) != lower_is_better else WORSE


def _check_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  if a.ndim != 1 or a.shape != b.shape:
    raise ValueError(f"paired values must be two 1-d arrays of one length, "
                     f"got shapes {a.shape} and {b.shape}")
  if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
    raise ValueError("paired values must be finite")
  return a, b


def _check_settings(num_resamples: int, confidence: float) -> None:
  if num_resamples < 2000:
    raise ValueError(f"num_resamples={num_resamples} is below 2000")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence={confidence} must be in (0, 1)")


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
  a, b = _check_pair(a, b)
  _check_settings(num_resamples, confidence)
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


def _pooled_means(sums: np.ndarray, counts: np.ndarray):
  """The statistic of a cluster draw [m, C]: its pooled mean."""
  return lambda idx: sums[idx].sum(axis=1) / counts[idx].sum(axis=1)


def paired_cluster_bootstrap(a: Sequence[float] | np.ndarray,
                             b: Sequence[float] | np.ndarray,
                             clusters: Sequence[Hashable], *,
                             lower_is_better: bool = False,
                             num_resamples: int = 10000,
                             confidence: float = 0.95, seed: int = 0,
                             exact: bool | None = None) -> PairedDifference:
  """Mean of a - b over paired samples, with a percentile bootstrap interval
  that resamples clusters of samples (e.g. the questions of a conversation)
  instead of samples.

  Each resample draws C of the C clusters with replacement and takes the
  mean of every difference in the drawn clusters (sum of their differences
  over their number of samples: a conversation with more questions weighs
  more, as in the point estimate, the mean over all n samples).

  Args:
    a, b: [n] per-sample values of the two methods, same order.
    clusters: [n] each sample's cluster label.
    lower_is_better, num_resamples, confidence, seed: as paired_bootstrap.
    exact: True enumerates all C^C resamples (up to 2^20); None enumerates
      when C^C <= num_resamples.
  Returns:
    PairedDifference with num_clusters = C (NaN interval, "not
    distinguishable", when C < 2).
  Raises:
    ValueError: as paired_bootstrap, or clusters not of length n.
  """
  a, b = _check_pair(a, b)
  if len(clusters) != a.size:
    raise ValueError(f"{len(clusters)} cluster labels for {a.size} samples")
  _check_settings(num_resamples, confidence)
  d = a - b
  n = d.size
  mean = float(d.mean()) if n else float("nan")
  labels = sorted(set(clusters), key=str)
  index = {label: i for i, label in enumerate(labels)}
  which = np.asarray([index[g] for g in clusters], np.int64)
  c = len(labels)
  if c < 2:
    return PairedDifference(mean, float("nan"), float("nan"), TIE, n, False,
                            num_clusters=c)
  sums = np.bincount(which, weights=d, minlength=c)
  counts = np.bincount(which, minlength=c).astype(np.float64)
  if exact is None:
    exact = c ** c <= num_resamples
  if exact and c ** c > _MAX_EXACT:
    raise ValueError(f"exact bootstrap of {c} clusters needs C^C = {c ** c} "
                     f"resamples (at most {_MAX_EXACT})")
  pooled = _pooled_means(sums, counts)
  means = (pooled(_every_draw(c)) if exact else
           _sampled_draws(c, num_resamples, seed, pooled))
  alpha = 1.0 - confidence
  low, high = (float(q) for q in np.quantile(means, [alpha / 2,
                                                      1 - alpha / 2]))
  return PairedDifference(mean, low, high,
                          verdict(low, high, lower_is_better), n, bool(exact),
                          _multiplicity.bootstrap_p_value(means),
                          num_clusters=c)
