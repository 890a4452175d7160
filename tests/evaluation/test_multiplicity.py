"""Holm's adjustment against a worked example, and the bootstrap p-value."""

import math

import numpy as np
import pytest

from kvp_jax.evaluation import _multiplicity


def test_holm_worked_example():
  # Four tests, p = 0.01, 0.04, 0.03, 0.005 (m = 4). Sorted: 0.005, 0.01,
  # 0.03, 0.04; multiplied by 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04; running
  # maximum: 0.02, 0.03, 0.06, 0.06. At alpha = 0.05 the first two hold
  # (0.005 and 0.01), the others do not, although 0.04 < 0.05 alone.
  adjusted = _multiplicity.holm([0.01, 0.04, 0.03, 0.005])
  np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
  assert [a < 0.05 for a in adjusted] == [True, False, False, True]


def test_holm_caps_at_one_skips_nan_and_keeps_a_single_test():
  assert _multiplicity.holm([0.6, 0.5]) == [1.0, 1.0]
  out = _multiplicity.holm([0.02, float("nan"), 0.01])
  assert math.isnan(out[1]) and out[0] == pytest.approx(0.02)
  assert out[2] == pytest.approx(0.02)          # m = 2, not 3.
  assert _multiplicity.holm([0.03]) == [0.03]
  with pytest.raises(ValueError, match=r"in \[0, 1\]"):
    _multiplicity.holm([1.5])


def test_bootstrap_p_value_agrees_with_the_interval():
  rng = np.random.default_rng(0)
  for shift in (0.0, 0.05, 0.35, -0.3):
    means = rng.normal(shift, 0.1, size=20000)
    p = _multiplicity.bootstrap_p_value(means)
    low, high = np.quantile(means, [0.025, 0.975])
    assert (p < 0.05) == (not low <= 0 <= high), (shift, p, low, high)
  assert _multiplicity.bootstrap_p_value(np.zeros(10)) == 1.0
  assert _multiplicity.bootstrap_p_value(np.ones(10)) == 0.0


def test_adjust_comparisons_within_each_family():
  def row(method, budget, p, difference=1.0, metric="agreement"):
    return dict(suite="s", metric=metric, method=method, protocol="once",
                allocation="uniform", budget=budget, p_value=p,
                difference=difference, lower_is_better=metric == "kl")
  rows = [row("kvp", 64, 0.01), row("kvp", 128, 0.04),
          row("kvp", 256, 0.03, difference=-2.0), row("kvp", 512, 0.005),
          row("kvp_x", 64, 0.04),              # Its own family of one.
          row("kvp", 64, 0.01, difference=-1.0, metric="kl")]
  out = _multiplicity.adjust_comparisons(rows)
  assert [r["p_holm"] for r in out[:4]] == pytest.approx(
      [0.03, 0.06, 0.06, 0.02])
  assert [r["verdict_holm"] for r in out[:4]] == [
      "better", "not distinguishable", "not distinguishable", "better"]
  assert out[4]["p_holm"] == pytest.approx(0.04)
  assert out[4]["verdict_holm"] == "better"
  assert out[5]["verdict_holm"] == "better"    # Lower KL is better.
  assert rows[0].get("p_holm") is None and out[0]["p_value"] == 0.01
