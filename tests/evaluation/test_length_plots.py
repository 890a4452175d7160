"""Metrics against the context length: lengths read from the groups, suite
families from the names, means and bands per (budget, scorer), one figure
per family that spans two lengths."""

import numpy as np

from kvp_jax.evaluation import _length_plots


def _rows():
  rows = []
  rng = np.random.default_rng(0)
  for length, k in ((4096, "4k"), (8192, "8k")):
    for i in range(5):
      for scorer, base in (("kvp", 90.0), ("keydiff", 80.0)):
        for budget in ("1024", "1/8"):
          rows.append({"suite": f"long_text_{k}", "group": f"doc@{length}",
                       "sample": f"s{length}-{i}", "scorer": scorer,
                       "budget": budget, "metric": "agreement",
                       "value": base - length / 1024 + rng.normal()})
  # One length only: not plotted.
  rows.append({"suite": "dialogues", "group": "dialogues@2048",
               "sample": "d", "scorer": "kvp", "budget": "64",
               "metric": "agreement", "value": 50.0})
  rows.append({"suite": "long_text_4k", "group": "doc@4096", "sample": "x",
               "scorer": "kvp", "budget": "1024", "metric": "kl",
               "value": float("nan")})
  return rows


def test_lengths_and_families():
  assert _length_plots.context_length("niah_single_1@16384") == 16384
  assert _length_plots.context_length("mean") is None
  assert _length_plots.suite_family("long_text_32k") == "long_text"
  assert _length_plots.suite_family("ruler") == "ruler"


def test_means_and_bands_by_length():
  rows = _rows()
  lines = _length_plots.by_length(rows, "agreement")
  pts = lines[("long_text", "1024", "kvp")]
  assert [p[0] for p in pts] == [4096, 8192] and [p[4] for p in pts] == [5, 5]
  for length, mean, low, high, _ in pts:
    values = [r["value"] for r in rows if r["group"] == f"doc@{length}" and
              r["metric"] == "agreement" and
              r["scorer"] == "kvp" and r["budget"] == "1024"]
    assert np.isclose(mean, np.mean(values))
    assert min(values) <= low < mean < high <= max(values)
  assert _length_plots.by_length(rows, "kl") == {}      # NaN only.


def test_one_figure_per_family_spanning_two_lengths(tmp_path):
  paths = _length_plots.plot_by_length(_rows(), tmp_path)
  assert [p.name for p in paths] == ["long_text_agreement_by_length.png"]
  assert paths[0].stat().st_size > 10_000
