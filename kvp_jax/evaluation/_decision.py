"""The rule that decides whether a candidate replaces the default policy.

Written down before its use, and read by code (`decide`), so that a choice
made on the dev grid is the rule's and not the reader's. A candidate (a
policy of the dev grid, e.g. a method ablation point) is compared with the
current default ("kvp") on the same dev samples, paired, in the rows of
verdicts.jsonl whose method is the candidate and whose family is the
default (eval.references). Its family of comparisons is every (suite,
metric, budget) the rule names. The burden of proof lies with the
candidate:

  * better: its p-values are Holm-adjusted together (kvp_jax.evaluation.
    _multiplicity), so that the chance of any "better" claimed by chance
    stays at most alpha; it must be better on at least one primary
    comparison after the adjustment;
  * worse: a regression counts unadjusted (the paired 95% interval below
    zero at any guarded comparison blocks), since adjusting the guard would
    make regressions harder to see the more comparisons are made.

The rule was written for issue #41 after the ablations had run, and the
seven ablation points were re-decided with it (experiments/results/
ablations/README.md); from then on it decides before the data.

  RULE                 the project's rule
  decide(rows, name)   a Decision for candidate `name`
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from kvp_jax.evaluation import _multiplicity


@dataclasses.dataclass(frozen=True)
class DecisionRule:
  """What a candidate must show on dev to replace the default.

  Attributes:
    default: the scorer name of the current default in the dev grid.
    primary: (suite, metric) where the candidate must be better somewhere.
    guarded: (suite, metric) where it may be worse nowhere (the primary ones
      are guarded too).
    budgets: the budgets compared.
    alpha: the family-wise error rate of the Holm adjustment.
  """
  default: str = "kvp"
  primary: tuple[tuple[str, str], ...] = (("ruler", "agreement"),
                                          ("dialogues", "agreement"))
  guarded: tuple[tuple[str, str], ...] = (("ruler", "retention"),)
  budgets: tuple[str, ...] = ("64", "128", "256", "512", "1024")
  alpha: float = 0.05

  @property
  def family(self) -> tuple[tuple[str, str], ...]:
    return tuple(dict.fromkeys(self.primary + self.guarded))


RULE = DecisionRule()


@dataclasses.dataclass(frozen=True)
class Decision:
  """A candidate under a rule.

  Attributes:
    candidate: its scorer name.
    replaces: the rule's answer.
    better: (suite, metric, budget) where it is better, Holm-adjusted.
    worse: where it is worse, unadjusted (the paired interval).
    worse_adjusted: where it is worse after the Holm adjustment too.
    missing: (suite, metric, budget) of the family with no comparison.
  """
  candidate: str
  replaces: bool
  better: tuple[tuple[str, str, str], ...]
  worse: tuple[tuple[str, str, str], ...]
  worse_adjusted: tuple[tuple[str, str, str], ...]
  missing: tuple[tuple[str, str, str], ...]

  @property
  def decided(self) -> bool:
    """Whether the missing comparisons could not change the answer: none
    is missing, or it is already worse somewhere or better nowhere."""
    return not self.missing or bool(self.worse) or not self.better


def decide(rows: Sequence[dict], candidate: str,
           rule: DecisionRule = RULE) -> Decision:
  """The rule applied to a candidate's paired rows against the default.

  Args:
    rows: verdicts.jsonl rows; those of kind "paired" with method
      `candidate` and family `rule.default` are read (they need "p_value"
      and "verdict", the unadjusted one).
    candidate: the candidate's scorer name.
    rule: the rule.
  Raises:
    ValueError: a row of the family has no p_value (a report made before
      p-values were recorded: rebuild it with --report_only).
  """
  cells = {}
  for r in rows:
    key = (r.get("suite"), r.get("metric"), str(r.get("budget")))
    if (r.get("kind") == "paired" and r.get("method") == candidate and
        r.get("family") == rule.default and key[:2] in rule.family and
        key[2] in rule.budgets):
      if "p_value" not in r:
        raise ValueError(f"the paired row {key} of {candidate} has no "
                         "p_value; rebuild the report (--report_only)")
      cells[key] = r
  wanted = [(s, m, b) for s, m in rule.family for b in rule.budgets]
  missing = tuple(k for k in wanted if k not in cells)
  keys = [k for k in wanted if k in cells]
  adjusted = _multiplicity.holm([cells[k]["p_value"] for k in keys])
  better, worse, worse_adjusted = [], [], []
  for key, p in zip(keys, adjusted):
    row = cells[key]
    up = (row["difference"] > 0) != bool(row.get("lower_is_better"))
    if p < rule.alpha:
      (better if up else worse_adjusted).append(key)
    if row["verdict"] == "worse":
      worse.append(key)
  replaces = (not missing and not worse and
              any(k[:2] in rule.primary for k in better))
  return Decision(candidate, replaces, tuple(better), tuple(worse),
                  tuple(worse_adjusted), missing)
