"""The conversation-level (cluster) bootstrap against brute-force
enumeration, and its use in the paired comparisons."""

import itertools

import numpy as np
import pytest

from kvp_jax.evaluation import _bootstrap
from kvp_jax.evaluation import _paired


def _enumerated(d, clusters):
  """Every ordered draw of C clusters out of C, pooled mean of each (a
  direct reading of the definition, no shared code)."""
  labels = sorted(set(clusters))
  members = {g: [x for x, c in zip(d, clusters) if c == g] for g in labels}
  means = []
  for draw in itertools.product(labels, repeat=len(labels)):
    values = [x for g in draw for x in members[g]]
    means.append(sum(values) / len(values))
  return np.asarray(means)


def test_the_interval_is_the_enumerated_distribution():
  a = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0]
  b = [2.0, 2.0, 1.0, 0.0, 5.0, 3.0]
  clusters = ["x", "y", "y", "z", "z", "z"]       # sizes 1, 2, 3
  d = np.subtract(a, b)
  means = _enumerated(d, clusters)
  got = _bootstrap.paired_cluster_bootstrap(a, b, clusters, exact=True)
  low, high = np.quantile(means, [0.025, 0.975])
  assert got.num_clusters == 3 and got.num_samples == 6 and got.exact
  assert got.mean == pytest.approx(d.mean())
  assert (got.low, got.high) == pytest.approx((low, high))
  assert got.p_value == pytest.approx(
      min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0))))
  # By hand: d = 1 | -1, 3 | 1, 0, 6, cluster sums 1, 2, 7 over 1, 2, 3
  # samples; draws of x and y only pool to 1, (z, z, z) to 7 / 3, the most.
  assert means.size == 27
  assert means.min() == pytest.approx(1.0)
  assert means.max() == pytest.approx(7 / 3)


def test_singleton_clusters_are_the_plain_bootstrap():
  a, b = [0.5, 2.0, -1.0, 3.0], [0.0, 1.0, 0.0, 1.0]
  plain = _bootstrap.paired_bootstrap(a, b, exact=True)
  clustered = _bootstrap.paired_cluster_bootstrap(a, b, [0, 1, 2, 3],
                                                  exact=True)
  assert (clustered.low, clustered.high) == pytest.approx(
      (plain.low, plain.high))
  assert clustered.verdict == plain.verdict


def test_correlated_questions_widen_the_interval():
  """Five identical questions per conversation: resampling conversations
  gives the bootstrap of the 4 conversation means; resampling questions
  would pretend to 20 independent samples."""
  per_conversation = [1.0, -0.5, 2.0, 0.25]
  a = np.repeat(per_conversation, 5)
  b = np.zeros_like(a)
  clusters = np.repeat(["c0", "c1", "c2", "c3"], 5).tolist()
  clustered = _bootstrap.paired_cluster_bootstrap(a, b, clusters)
  of_means = _bootstrap.paired_bootstrap(per_conversation, [0.0] * 4)
  naive = _bootstrap.paired_bootstrap(a, b)
  assert (clustered.low, clustered.high) == pytest.approx(
      (of_means.low, of_means.high))
  assert naive.high - naive.low < clustered.high - clustered.low


def test_the_comparisons_resample_clusters_when_rows_name_them():
  rows = []
  for q in range(12):
    conversation = f"c{q // 3}"
    for scorer, value in (("kvp", 100.0 * (q % 2)), ("keydiff", 0.0)):
      rows.append({"suite": "s", "sample": f"q{q}", "scorer": scorer,
                   "budget": 64, "metric": "accuracy", "value": value,
                   "cluster": conversation})
  families = {"query_free": ("keydiff",)}
  clustered = _paired.kvp_against_baselines(rows, families=families)
  assert len(clustered) == 1 and clustered[0]["num_clusters"] == 4
  kvp = [r["value"] for r in rows if r["scorer"] == "kvp"]
  want = _bootstrap.paired_cluster_bootstrap(
      kvp, [0.0] * 12, [f"c{q // 3}" for q in range(12)])
  assert (clustered[0]["low"], clustered[0]["high"]) == (want.low, want.high)
  plain = _paired.kvp_against_baselines(
      [{k: v for k, v in r.items() if k != "cluster"} for r in rows],
      families=families)
  assert "num_clusters" not in plain[0]


def test_bad_cluster_labels_are_refused():
  with pytest.raises(ValueError, match="2 cluster labels for 3 samples"):
    _bootstrap.paired_cluster_bootstrap([1, 2, 3], [0, 0, 0], ["a", "b"])
  one = _bootstrap.paired_cluster_bootstrap([1, 2], [0, 0], ["a", "a"])
  assert one.verdict == _bootstrap.TIE and np.isnan(one.low)
