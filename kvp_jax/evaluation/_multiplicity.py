"""Multiplicity: Holm's step-down adjustment of a family's p-values.

A report that states many paired verdicts at 95% states some wrongly by
chance. Within a declared family (kvp_jax.evaluation._verdicts: one per
suite, metric and compared method: every budget x every compared baseline),
Holm's procedure keeps the chance of any false "better" or "worse" at most
alpha: sort the m p-values ascending, p_(1) <= ... <= p_(m); the adjusted

    p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)),

and a comparison is a verdict at level alpha when p~ < alpha (Holm 1979).

  bootstrap_p_value(means)   the two-sided p-value of a bootstrap's means
  holm(p_values)             adjusted p-values, in the input order
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def bootstrap_p_value(means: np.ndarray) -> float:
  """Two-sided p-value of "the mean difference is 0" from the resampled
  means of a percentile bootstrap: twice the smaller share of means on
  either side of 0 (at most 1). It agrees with the percentile interval: the
  (1 - alpha) interval excludes 0 exactly when p < alpha, up to the
  quantiles' interpolation."""
  means = np.asarray(means, np.float64)
  if means.size == 0:
    return float("nan")
  below = float(np.mean(means <= 0.0))
  above = float(np.mean(means >= 0.0))
  return min(1.0, 2.0 * min(below, above))


def holm(p_values: Sequence[float]) -> list[float]:
  """Holm-adjusted p-values of one family, in the input order. NaN entries
  (no test) are left out of the family and stay NaN.

  Raises:
    ValueError: a p-value outside [0, 1].
  """
  p = np.asarray(p_values, np.float64)
  if np.any((p < 0) | (p > 1)):
    raise ValueError(f"p-values must be in [0, 1], got {p[(p < 0) | (p > 1)]}")
  out = np.full(p.shape, np.nan)
  tested = np.flatnonzero(~np.isnan(p))
  m = tested.size
  order = tested[np.argsort(p[tested], kind="stable")]
  running = 0.0
  for rank, index in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p[index]))
    out[index] = running
  return out.tolist()


# A paired comparison's family: every budget x every compared baseline of
# one suite, metric and compared method (and protocol, allocation).
FAMILY = ("suite", "metric", "method", "protocol", "allocation")


def adjust_comparisons(comparisons: Sequence[dict], alpha: float = 0.05
                       ) -> list[dict]:
  """The paired comparisons (kvp_jax.evaluation._paired rows with p_value,
  difference, lower_is_better), each with p_holm (Holm-adjusted within its
  FAMILY) and verdict_holm ("better" / "worse" for the method, or "not
  distinguishable") added; the unadjusted fields stay."""
  families: dict[tuple, list[int]] = {}
  for i, c in enumerate(comparisons):
    families.setdefault(tuple(str(c.get(k)) for k in FAMILY), []).append(i)
  out = [dict(c) for c in comparisons]
  for members in families.values():
    adjusted = holm([out[i].get("p_value", float("nan")) for i in members])
    for i, p in zip(members, adjusted):
      c = out[i]
      c["p_holm"] = p
      if p < alpha and c["difference"] != 0:
        up = (c["difference"] > 0) != bool(c.get("lower_is_better"))
        c["verdict_holm"] = "better" if up else "worse"
      else:
        c["verdict_holm"] = "not distinguishable"
  return out
