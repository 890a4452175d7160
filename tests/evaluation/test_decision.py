"""The default-replacement rule on hand-built verdict rows."""

import pytest

from kvp_jax.evaluation import _decision

RULE = _decision.DecisionRule(primary=(("ruler", "agreement"),),
                              guarded=(("dialogues", "agreement"),),
                              budgets=("64", "128"))


def _row(suite, budget, difference, p, candidate="kvp_x", metric="agreement"):
  return dict(kind="paired", method=candidate, family="kvp", suite=suite,
              metric=metric, budget=budget, difference=difference,
              p_value=p, lower_is_better=False,
              verdict="better" if p < 0.05 and difference > 0 else (
                  "worse" if p < 0.05 else "not distinguishable"))


def test_better_is_holm_adjusted_and_worse_is_not():
  # Family of 4: p = 0.001, 0.2, 0.5, 0.01. Sorted 0.001, 0.01, 0.2, 0.5
  # times 4, 3, 2, 1: 0.004, 0.03, 0.4, 0.5: ruler@64 better and
  # dialogues@128 worse both hold after the adjustment.
  rows = [_row("ruler", "64", 1.0, 0.001), _row("ruler", "128", 0.2, 0.2),
          _row("dialogues", "64", 0.1, 0.5),
          _row("dialogues", "128", -0.3, 0.01)]
  d = _decision.decide(rows, "kvp_x", RULE)
  assert d.better == (("ruler", "agreement", "64"),)
  assert d.worse == d.worse_adjusted == (("dialogues", "agreement", "128"),)
  assert not d.replaces and d.decided
  # Unadjusted 0.03 is a "worse" verdict; Holm makes it 0.03 x 3 = 0.09, but
  # a regression blocks unadjusted.
  rows[3] = _row("dialogues", "128", -0.3, 0.03)
  rows[1] = _row("ruler", "128", 0.2, 0.6)
  d = _decision.decide(rows, "kvp_x", RULE)
  assert d.worse_adjusted == () and d.worse == (
      ("dialogues", "agreement", "128"),)
  assert not d.replaces
  # No regression: the adjusted "better" at 64 (0.001 x 4) is enough.
  rows[3] = _row("dialogues", "128", 0.05, 0.3)
  d = _decision.decide(rows, "kvp_x", RULE)
  assert d.worse == () and d.replaces
  # "Better" must survive Holm: 0.02 x 4 = 0.08 does not.
  rows[0] = _row("ruler", "64", 1.0, 0.02)
  d = _decision.decide(rows, "kvp_x", RULE)
  assert d.better == () and not d.replaces


def test_better_only_on_a_guarded_metric_is_not_enough():
  rows = [_row("ruler", b, 0.0, 0.9) for b in ("64", "128")] + [
      _row("dialogues", b, 1.0, 0.0001) for b in ("64", "128")]
  d = _decision.decide(rows, "kvp_x", RULE)
  assert len(d.better) == 2 and not d.replaces


def test_missing_cells_and_old_reports():
  d = _decision.decide([_row("ruler", "64", 1.0, 0.001)], "kvp_x", RULE)
  assert not d.replaces and len(d.missing) == 3 and not d.decided
  d = _decision.decide([_row("ruler", "64", 0.1, 0.4)], "kvp_x", RULE)
  assert not d.replaces and d.decided           # Better nowhere.
  old = _row("ruler", "64", 1.0, 0.001)
  del old["p_value"]
  with pytest.raises(ValueError, match="rebuild the report"):
    _decision.decide([old], "kvp_x", RULE)
  # Other candidates' and other families' rows are not read.
  other = [_row("ruler", "64", -1.0, 0.0, candidate="kvp_y")]
  assert _decision.decide(other, "kvp_x", RULE).missing == tuple(
      (s, m, b) for s, m in RULE.family for b in RULE.budgets)
