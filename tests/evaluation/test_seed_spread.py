"""The spread over seeds beside the interval over samples."""

from kvp_jax.evaluation import _paired_tables


def _comparison(method, budget, difference, family="query_free"):
  return dict(suite="ruler", metric="agreement", family=family,
              budget=budget, method=method, baseline="keydiff",
              difference=difference, low=difference - 1,
              high=difference + 1, verdict="better", protocol="once")


def test_the_spread_is_the_range_over_the_seeds():
  comparisons = [_comparison("kvp", 64, 2.0), _comparison("kvp", 128, 3.0),
                 _comparison("kvp_seed43", 64, 0.5),
                 _comparison("kvp_seed44", 64, 4.25),
                 _comparison("kvp_seed43", 128, 3.5),
                 _comparison("kvp_other", 64, -9.0)]
  lines = _paired_tables.seed_spread_markdown(comparisons)
  assert "over 3 seeds" in lines[0]
  row = next(l for l in lines if l.startswith("| query_free"))
  b64, b128 = row.split(" | ")[1:3]
  assert b64.startswith("+2.00 [+1.00, +3.00]")
  assert b64.endswith("seeds +0.50..+4.25")    # kvp_other is no seed.
  assert b128.rstrip(" |").endswith("seeds +3.00..+3.50")


def test_no_table_without_seeds():
  assert _paired_tables.seed_spread_markdown(
      [_comparison("kvp", 64, 2.0)]) == []
