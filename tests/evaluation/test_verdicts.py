"""Answer retention and KVP's paired verdicts, from per-sample rows."""

import json

import numpy as np
import pytest

from kvp_jax.evaluation import _multiplicity
from kvp_jax.evaluation import _bootstrap
from kvp_jax.evaluation import _paired
from kvp_jax.evaluation import _paired_tables
from kvp_jax.evaluation import _report
from kvp_jax.evaluation import _verdicts


def _rows(seed=0, n=12):
  rng = np.random.default_rng(seed)
  full = rng.random(n) < 0.75
  rows = []
  for i in range(n):
    rows.append(dict(suite="ruler", sample=f"s{i}", group="g", scorer="full",
                     budget="full", protocol="full", allocation="full",
                     metric="accuracy", value=100.0 * full[i]))
    for scorer, p in (("kvp", 0.9), ("knorm", 0.5), ("keydiff", 0.6),
                      ("snapkv", 0.7)):
      right = full[i] and rng.random() < p
      rows.append(dict(suite="ruler", sample=f"s{i}", group="g",
                       scorer=scorer, budget=64, protocol="once",
                       allocation="uniform", metric="accuracy",
                       value=100.0 * right))
      rows.append(dict(suite="ruler", sample=f"s{i}", group="g",
                       scorer=scorer, budget=64, protocol="once",
                       allocation="uniform", metric="kl",
                       value=float(rng.exponential(1 - p))))
  return rows, full


def test_retention_counts_only_what_the_full_cache_got_right():
  rows, full = _rows()
  ret = _verdicts.retention_rows(rows)
  assert {r["sample"] for r in ret} == {f"s{i}" for i in np.flatnonzero(full)}
  for scorer in ("kvp", "knorm"):
    want = np.mean([r["value"] for r in rows if r["scorer"] == scorer and
                    r["metric"] == "accuracy" and full[int(r["sample"][1:])]])
    got = np.mean([r["value"] for r in ret if r["scorer"] == scorer])
    np.testing.assert_allclose(got, want)
  assert all(r["metric"] == "retention" and r["value"] in (0.0, 100.0)
             for r in ret)


def test_report_verdicts_are_the_paired_function(tmp_path):
  rows, _ = _rows(1)
  aggregated = _report.aggregate(rows)
  extra = _verdicts.write(rows, aggregated, tmp_path)
  written = [json.loads(l) for l in
             (tmp_path / "verdicts.jsonl").read_text().splitlines()]
  paired = [{k: v for k, v in r.items() if k != "kind"} for r in written
            if r["kind"] == "paired"]
  compressed = [r for r in rows if r["scorer"] != "full"]
  want = _multiplicity.adjust_comparisons(_paired.kvp_against_baselines(
      compressed + _verdicts.retention_rows(rows), num_resamples=10000,
      seed=0))
  assert paired == json.loads(json.dumps(want))
  assert all("p_holm" in r and "verdict_holm" in r for r in paired)
  assert {(r["metric"], r["family"]) for r in paired} == {
      (m, f) for m in ("accuracy", "kl", "retention")
      for f in ("query_free", "query_aware")}
  assert {r["baseline"] for r in paired if r["family"] == "query_aware"} == {
      "snapkv"}
  md = "\n".join(extra)
  assert "ruler: answer retention" in md
  assert md.count("| KVP ") == len(paired)       # One table row per verdict.
  assert (tmp_path / "ruler_kl_paired.png").is_file()
  # The markdown keeps today's tables first, then the new sections.
  full_md = _report.markdown(aggregated, "t", extra)
  assert full_md.startswith(_report.markdown(aggregated, "t").rstrip("\n"))
  assert full_md.index("## ruler: accuracy") < full_md.index(
      "answer retention")


def test_non_finite_values_are_left_out():
  rows, _ = _rows(2)
  rows += [dict(suite="cost", sample="s0", group="g", scorer=s, budget=512,
                protocol="ranking", allocation="ranking",
                metric="evicted_share", value=float("nan"))
           for s in ("kvp", "knorm")]
  got = _verdicts.paired_comparisons(rows)
  assert not any(c["suite"] == "cost" for c in got)


def _two_task_rows(n=10):
  """Agreement rows of two tasks: kvp 5 points above keydiff on "a@1k",
  5 below on "b@1k" (plus noise), at two budgets; snapkv, query-aware,
  in between."""
  rng = np.random.default_rng(3)
  rows = []
  for task, sign in (("a@1k", 1), ("b@1k", -1)):
    for i in range(n):
      for budget in (64, 128):
        base = 80 + rng.normal()
        for scorer, value in (("kvp", base + sign * 5 + rng.normal(0, .5)),
                              ("keydiff", base), ("random", base - 10),
                              ("snapkv", base + sign * 2)):
          rows.append(dict(suite="ruler", sample=f"{task}-{i}", group=task,
                           scorer=scorer, budget=budget, protocol="once",
                           allocation="uniform", metric="agreement",
                           value=float(value)))
  return rows


def test_group_verdicts_show_where_the_suite_verdict_comes_from(tmp_path):
  rows = _two_task_rows()
  by_group = _verdicts.group_comparisons(rows)
  cells = {(c["suite"], str(c["budget"]), c["family"]): c for c in by_group}
  assert len(cells) == len(by_group) == 2 * 2 * 2
  for budget in (64, 128):
    better = cells[("ruler/a@1k", str(budget), "query_free")]
    worse = cells[("ruler/b@1k", str(budget), "query_free")]
    assert better["baseline"] == worse["baseline"] == "keydiff"
    assert better["verdict"] == _bootstrap.BETTER and better["num_samples"] == 10
    assert worse["verdict"] == _bootstrap.WORSE
    assert better["difference"] == pytest.approx(5, abs=0.5)
  # The suite as a whole: the two tasks cancel.
  suite = [c for c in _verdicts.paired_comparisons(rows)
           if c["family"] == "query_free"]
  assert {c["verdict"] for c in suite} == {_bootstrap.TIE}
  md = _paired_tables.group_markdown(by_group)
  lines = [l for l in md if l.startswith("| a@1k") or l.startswith("| b@1k")]
  assert len(lines) == 4                  # Two tasks x two families.
  assert md.index("### ruler: agreement, against the best query_free "
                  "baseline") < md.index("### ruler: agreement, against the "
                                         "best query_aware baseline")
  first = lines[0].split(" | ")
  assert first[1] == "10" and first[2].endswith("▲ keydiff")
  # One group: nothing per group (the suite's verdicts say it all).
  one = [dict(r, group="a@1k") for r in rows if r["group"] == "a@1k"]
  assert _verdicts.group_comparisons(one) == []
  assert _paired_tables.group_markdown([]) == []
  # The report writes them, beside the suite's verdicts.
  _verdicts.write(rows, _report.aggregate(rows), tmp_path)
  written = [json.loads(l) for l in
             (tmp_path / "verdicts.jsonl").read_text().splitlines()]
  assert sum(r["kind"] == "paired_group" for r in written) == len(by_group)


def test_extra_policies_are_compared_with_each_reference_policy():
  # Three policies on the same 12 samples: "kvp" (the base), the default
  # "kvp_default" 3 points above it and "kvp_change" 1 point above the
  # default (noise 0.1): each extra policy against every reference but
  # itself, the difference the plain mean of the paired differences.
  rng = np.random.default_rng(7)
  rows = []
  for i in range(12):
    base = 50 + 10 * rng.normal()
    for scorer, value in (("kvp", base), ("kvp_default", base + 3),
                          ("kvp_change", base + 4 + rng.normal(0, .1)),
                          ("keydiff", base - 20)):
      rows.append(dict(suite="ruler", sample=f"s{i}", group="g",
                       scorer=scorer, budget=64, protocol="once",
                       allocation="uniform", metric="agreement",
                       value=float(value)))
  got = _verdicts.paired_comparisons(rows,
                                     references=("kvp", "kvp_default"))
  pairs = {(c["method"], c["family"]): c for c in got}
  assert set(pairs) == {
      ("kvp", "query_free"), ("kvp_change", "query_free"),
      ("kvp_change", "kvp"), ("kvp_change", "kvp_default"),
      ("kvp_default", "query_free"), ("kvp_default", "kvp")}
  value = {(r["scorer"], r["sample"]): r["value"] for r in rows}
  for (method, ref), want in ((("kvp_change", "kvp_default"), 1.0),
                              (("kvp_change", "kvp"), 4.0),
                              (("kvp_default", "kvp"), 3.0)):
    c = pairs[(method, ref)]
    diffs = [value[(method, f"s{i}")] - value[(ref, f"s{i}")]
             for i in range(12)]
    assert c["baseline"] == ref and c["num_samples"] == 12
    assert c["difference"] == pytest.approx(np.mean(diffs))
    assert c["difference"] == pytest.approx(want, abs=0.1)
    assert c["verdict"] == _bootstrap.BETTER
  # The default keeps the base as its only reference.
  plain = {(c["method"], c["family"])
           for c in _verdicts.paired_comparisons(rows)}
  assert ("kvp_change", "kvp_default") not in plain
  assert ("kvp_change", "kvp") in plain


def test_a_reference_must_name_a_policy():
  from kvp_jax import evaluation
  assert evaluation.EvalConfig(
      references=("kvp", "kvp_default")).references == ("kvp",
                                                        "kvp_default")
  with pytest.raises(ValueError, match="config.eval.references.*keydiff"):
    evaluation.EvalConfig(references=("keydiff",))
