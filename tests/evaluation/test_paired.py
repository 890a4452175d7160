"""Paired bootstrap: the exact bootstrap distribution by brute force, seeds,
verdicts, and KVP against the best baseline of each family."""

import itertools
import math

import numpy as np
import pytest

from kvp_jax.evaluation import _bootstrap
from kvp_jax.evaluation import _paired
from kvp_jax.evaluation import _paired_tables


def _brute_force_interval(d, confidence=0.95):
  """Every one of the n^n resamples, as Python tuples, and the quantiles by
  the definition (linear interpolation at h = (N - 1) p of the sorted
  means)."""
  n = len(d)
  means = sorted(math.fsum(d[i] for i in idx) / n
                 for idx in itertools.product(range(n), repeat=n))
  def quantile(p):
    h = (len(means) - 1) * p
    lo = math.floor(h)
    hi = min(lo + 1, len(means) - 1)
    return means[lo] + (h - lo) * (means[hi] - means[lo])
  alpha = 1 - confidence
  return quantile(alpha / 2), quantile(1 - alpha / 2), means


@pytest.mark.parametrize("n", [4, 5])
def test_exact_mode_matches_brute_force_enumeration(n):
  rng = np.random.default_rng(n)
  a, b = rng.normal(size=n), rng.normal(size=n)
  low, high, _ = _brute_force_interval(list(a - b))
  got = _bootstrap.paired_bootstrap(a, b, exact=True)
  assert got.exact and got.num_samples == n
  np.testing.assert_allclose([got.low, got.high], [low, high], rtol=0,
                             atol=1e-12)
  assert got.mean == pytest.approx(np.mean(a - b))


def test_exact_mode_is_automatic_when_enumeration_fits():
  a, b = np.array([1.0, 2.0, 4.0, 0.5]), np.zeros(4)
  assert _bootstrap.paired_bootstrap(a, b, num_resamples=2000).exact  # 256.
  a5, b5 = np.arange(5.0), np.zeros(5)                              # 3125.
  assert not _bootstrap.paired_bootstrap(a5, b5, num_resamples=2000).exact
  assert _bootstrap.paired_bootstrap(a5, b5, num_resamples=4000).exact


def test_sampled_quantiles_approach_the_exact_ones():
  rng = np.random.default_rng(7)
  d = rng.exponential(size=5) - 0.8            # Skewed: a real asymmetry.
  low, high, means = _brute_force_interval(list(d))
  got = _bootstrap.paired_bootstrap(d, np.zeros(5), num_resamples=200000,
                                 exact=False, seed=3)
  assert not got.exact
  spread = means[-1] - means[0]
  assert abs(got.low - low) < 0.02 * spread
  assert abs(got.high - high) < 0.02 * spread
  # The interval is not symmetric about the mean for a skewed sample.
  assert abs((high - np.mean(d)) - (np.mean(d) - low)) > 0.02 * spread


def test_seeded_and_deterministic():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=300), rng.normal(size=300)
  first = _bootstrap.paired_bootstrap(a, b, seed=11)
  again = _bootstrap.paired_bootstrap(a, b, seed=11)
  other = _bootstrap.paired_bootstrap(a, b, seed=12)
  assert first == again
  assert (first.low, first.high) != (other.low, other.high)
  # Either interval is about mean -/+ 1.96 standard errors.
  se = np.std(a - b) / np.sqrt(300)
  for r in (first, other):
    assert r.low == pytest.approx(r.mean - 1.96 * se, abs=0.15 * se)
    assert r.high == pytest.approx(r.mean + 1.96 * se, abs=0.15 * se)


def test_fast_for_hundreds_of_samples():
  import time
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=500), rng.normal(size=500)
  start = time.perf_counter()
  _bootstrap.paired_bootstrap(a, b, num_resamples=10000)
  assert time.perf_counter() - start < 5.0


def test_verdicts_in_both_directions():
  base = np.linspace(0.0, 1.0, 40)
  up = base + 1.0 + 0.01 * np.sin(np.arange(40))
  higher = _bootstrap.paired_bootstrap(up, base)
  assert higher.low > 0 and higher.verdict == _bootstrap.BETTER
  assert _bootstrap.paired_bootstrap(up, base, lower_is_better=True).verdict \
      == _bootstrap.WORSE
  assert _bootstrap.paired_bootstrap(base, up).verdict == _bootstrap.WORSE
  assert _bootstrap.paired_bootstrap(base, up, lower_is_better=True).verdict \
      == _bootstrap.BETTER
  # Differences of both signs: the interval contains 0.
  noisy = base + np.where(np.arange(40) % 2, 1.0, -1.0)
  tie = _bootstrap.paired_bootstrap(noisy, base)
  assert tie.low < 0 < tie.high and tie.verdict == _bootstrap.TIE
  # Identical methods: a zero-width interval at 0 is a tie.
  same = _bootstrap.paired_bootstrap(base, base)
  assert (same.low, same.high, same.verdict) == (0.0, 0.0, _bootstrap.TIE)
  assert _bootstrap.verdict(0.0, 1.0, False) == _bootstrap.TIE
  one = _bootstrap.paired_bootstrap([3.0], [1.0])
  assert one.verdict == _bootstrap.TIE and np.isnan(one.low)


def test_bad_input():
  with pytest.raises(ValueError, match="1-d"):
    _bootstrap.paired_bootstrap([1.0, 2.0], [1.0])
  with pytest.raises(ValueError, match="finite"):
    _bootstrap.paired_bootstrap([1.0, np.nan], [1.0, 2.0])
  with pytest.raises(ValueError, match="2000"):
    _bootstrap.paired_bootstrap([1.0, 2.0], [1.0, 2.0], num_resamples=100)
  with pytest.raises(ValueError, match="n\\^n"):
    _bootstrap.paired_bootstrap(np.arange(12.0), np.zeros(12), exact=True)


def _rows(suite, metric, budget, scorer, values, start=0):
  return [dict(suite=suite, sample=f"s{start + i}", group="g", scorer=scorer,
               budget=budget, protocol="once", allocation="uniform",
               metric=metric, value=float(v)) for i, v in enumerate(values)]


def test_kvp_against_the_best_baseline_of_each_family():
  rng = np.random.default_rng(0)
  n = 30
  kvp = rng.uniform(40, 60, n)
  rows = (_rows("ruler", "accuracy", 128, "kvp", kvp) +
          _rows("ruler", "accuracy", 128, "knorm", kvp - 5) +
          _rows("ruler", "accuracy", 128, "keydiff", kvp - 1 +
                rng.normal(0, 3, n)) +
          _rows("ruler", "accuracy", 128, "snapkv", kvp + 10) +
          _rows("ruler", "accuracy", 128, "h2o", kvp + 2) +
          _rows("ruler", "accuracy", 128, "oracle", kvp + 50) +
          # Perplexity: lower is better; lagkv is only on half the samples.
          _rows("dialogue", "perplexity", 64, "kvp", kvp / 10) +
          _rows("dialogue", "perplexity", 64, "random", kvp / 10 + 3) +
          _rows("dialogue", "perplexity", 64, "lagkv", kvp[:15] / 10 + 1) +
          # No KVP in this cell: nothing reported.
          _rows("ruler", "accuracy", 256, "knorm", kvp))
  out = _paired.kvp_against_baselines(rows, num_resamples=2000, seed=1)
  got = {(c["suite"], c["budget"], c["family"]): c for c in out}
  assert set(got) == {("ruler", "128", "query_free"),
                      ("ruler", "128", "query_aware"),
                      ("dialogue", "64", "query_free")}
  free = got["ruler", "128", "query_free"]
  expected_best = max(["knorm", "keydiff"],
                      key=lambda s: np.mean([r["value"] for r in rows
                                             if r["scorer"] == s and
                                             r["budget"] == 128]))
  assert free["baseline"] == expected_best == "keydiff"
  # The helper pairs samples in sorted order of their ids.
  order = sorted(range(n), key=lambda i: f"s{i}")
  keydiff = [r["value"] for r in rows if r["scorer"] == "keydiff"]
  direct = _bootstrap.paired_bootstrap(
      kvp[order], np.asarray(keydiff)[order], num_resamples=2000, seed=1)
  assert (free["difference"], free["low"], free["high"], free["verdict"]) \
      == (direct.mean, direct.low, direct.high, direct.verdict)
  aware = got["ruler", "128", "query_aware"]
  assert aware["baseline"] == "snapkv" and aware["verdict"] == _bootstrap.WORSE
  assert aware["difference"] == pytest.approx(-10.0)
  assert aware["low"] == pytest.approx(-10.0)
  ppl = got["dialogue", "64", "query_free"]
  # lagkv has the lower mean, so it is the best; paired on its 15 samples.
  assert ppl["baseline"] == "lagkv" and ppl["num_samples"] == 15
  assert ppl["lower_is_better"] and ppl["verdict"] == _bootstrap.BETTER
  assert ppl["difference"] == pytest.approx(-1.0)
  assert ppl["kvp_mean"] == pytest.approx(np.mean(kvp[:15] / 10))
  text = "\n".join(_paired_tables.comparisons_markdown(out))
  assert "| ruler | 128 | accuracy | query_aware | snapkv | 30 |" in text
  assert _paired_tables.comparisons_markdown([]) == []


def test_duplicate_rows_in_a_cell_are_an_error():
  rows = _rows("ruler", "accuracy", 64, "kvp", [1.0, 2.0]) * 2
  with pytest.raises(ValueError, match="two rows"):
    _paired.kvp_against_baselines(rows)


def test_summary_table_has_one_row_per_method_and_family():
  rng = np.random.default_rng(3)
  n = 20
  kvp = rng.uniform(80, 90, n)
  rows = []
  for budget, shift in ((64, 0.0), (128, 3.0)):
    rows += (_rows("ruler", "agreement", budget, "kvp", kvp + shift) +
             _rows("ruler", "agreement", budget, "knorm", kvp - 2) +
             _rows("ruler", "agreement", budget, "h2o", kvp + 5))
  # An extra policy ("kvp_<label>"), only at budget 64, 1 point below kvp
  # with noise: against kvp it is worse, the interval from its differences.
  below = kvp - 1 + rng.normal(0, 0.1, n)
  rows += _rows("ruler", "agreement", 64, "kvp_paper", below)
  rows += _rows("ruler", "kl", 64, "kvp", kvp)       # Not a summary metric.
  rows += _rows("ruler", "kl", 64, "knorm", kvp)
  comparisons = _paired.kvp_against_baselines(rows, num_resamples=2000,
                                              seed=0)
  comparisons += _paired.kvp_against_baselines(
      rows, kvp="kvp_paper", families={"kvp": ("kvp",)},
      num_resamples=2000, seed=0)
  lines = _paired_tables.summary_markdown(comparisons)
  assert "### ruler: agreement" in lines
  assert not any(line.startswith("### ruler: kl") for line in lines)
  table = [line for line in lines if line.startswith("| ")]
  assert table[0] == "| method - family | b=64 | b=128 |"
  body = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in table[1:]}
  assert list(body) == ["kvp - query_free", "kvp - query_aware",
                        "kvp_paper - kvp"]
  # kvp - knorm: +2 at 64 and +5 at 128 on every sample (interval a point).
  assert body["kvp - query_free"][0] == "+2.00 [+2.00, +2.00] ▲"
  assert body["kvp - query_free"][1] == "+5.00 [+5.00, +5.00] ▲ |"
  assert body["kvp - query_aware"][0] == "-5.00 [-5.00, -5.00] ▼"
  # kvp_paper has no cell at 128: that column is blank.
  (paper,) = [c for c in comparisons if c["method"] == "kvp_paper"]
  assert paper["verdict"] == _bootstrap.WORSE
  assert body["kvp_paper - kvp"] == [
      f"{paper['difference']:+.2f} [{paper['low']:+.2f}, "
      f"{paper['high']:+.2f}] ▼", " |"]
  assert _paired_tables.summary_markdown(
      [c for c in comparisons if c["metric"] == "kl"]) == []
  # Two protocols in one grid: each heading names its own.
  chunked = [dict(c, protocol="chunked") for c in comparisons]
  headings = [line for line in _paired_tables.summary_markdown(comparisons + chunked)
              if line.startswith("### ")]
  assert headings == [
      "### ruler: agreement, protocol chunked, allocation uniform",
      "### ruler: agreement, protocol once, allocation uniform"]


def test_summary_table_of_small_numbers_has_three_decimals():
  kvp = np.linspace(0.1, 0.2, 10)
  rows = (_rows("dialogues", "kl", 64, "kvp", kvp) +
          _rows("dialogues", "kl", 64, "random", kvp + 0.0125))
  comparisons = _paired.kvp_against_baselines(rows, num_resamples=2000)
  lines = _paired_tables.summary_markdown(comparisons, metrics=("kl",))
  assert "| kvp - query_free | -0.013 [-0.013, -0.013] ▲ |" in lines
