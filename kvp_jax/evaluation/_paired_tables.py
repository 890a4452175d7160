"""Markdown tables of paired comparisons (kvp_jax.evaluation._paired):

  comparisons_markdown(comparisons)  one table row per comparison
  summary_markdown(comparisons)      the same at a glance: one row per
                                     (method, family), one column per budget
  group_markdown(comparisons)        per-task (group) comparisons
  seed_spread_markdown(comparisons)  KVP's interval over samples beside
                                     its spread over seeds
"""

from __future__ import annotations

import collections
from typing import Mapping, Sequence


from kvp_jax.evaluation._bootstrap import BETTER
from kvp_jax.evaluation._bootstrap import TIE
from kvp_jax.evaluation._bootstrap import WORSE
from kvp_jax.evaluation._paired import baseline_families
from kvp_jax.evaluation._paired import budget_order


def comparisons_markdown(comparisons: Sequence[Mapping],
                         confidence: float = 0.95) -> list[str]:
  """Markdown lines: one table row per kvp_against_baselines() entry; empty
  without entries."""
  if not comparisons:
    return []
  lines = []
  for method in sorted({c.get("method", "kvp") for c in comparisons},
                       key=lambda m: (m != "kvp", m)):
    name = "KVP" if method == "kvp" else method
    lines += [f"## {name} against the best baseline of each family (paired, "
              f"{confidence:.0%} bootstrap interval of {name} - baseline)",
              "", f"| suite | budget | metric | family | baseline | n | "
              f"{method} | baseline | difference [interval] | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
      if c.get("method", "kvp") != method:
        continue
      lines.append(
          f"| {c['suite']} | {c['budget']} | {c['metric']} | {c['family']} | "
          f"{c['baseline']} | {c['num_samples']} | {c['kvp_mean']:.3f} | "
          f"{c['baseline_mean']:.3f} | {c['difference']:+.3f} "
          f"[{c['low']:+.3f}, {c['high']:+.3f}] | {name} {c['verdict']} |")
    lines.append("")
  return lines


_MARK = {BETTER: "▲", WORSE: "▼", TIE: "="}
SUMMARY_METRICS = ("agreement", "retention")


def _family_rank(family: str, families: Sequence[str]) -> int:
  """A family's place in `families` (unknown ones last)."""
  return families.index(family) if family in families else len(families)


def _table_digits(cells: Sequence[Mapping]) -> int:
  """Two decimals, three where every interval end of the table is below 1
  (KL)."""
  return 2 if max(max(abs(c["low"]), abs(c["high"])) for c in cells) >= 1 else 3


def _glance_cell(c: Mapping | None, digits: int,
                 with_baseline: bool = False) -> str:
  """One comparison as "+d [low, high] mark" (and its baseline's name);
  empty for a missing one."""
  if c is None:
    return ""
  text = (f"{c['difference']:+.{digits}f} [{c['low']:+.{digits}f}, "
          f"{c['high']:+.{digits}f}] {_MARK[c['verdict']]}")
  return f"{text} {c['baseline']}" if with_baseline else text


def summary_markdown(comparisons: Sequence[Mapping],
                     metrics: Sequence[str] = SUMMARY_METRICS,
                     confidence: float = 0.95) -> list[str]:
  """The comparisons at a glance (the ablation table of a grid with several
  policies): per (suite, metric, protocol, allocation) one row per (method,
  family), one column per budget, each cell the difference with its
  interval (two decimals; three in a table whose numbers are all below 1)
  and a mark (▲ better, ▼ worse, = not distinguishable, for the method);
  empty without entries of `metrics`. Headings name the protocol
  and allocation only when the comparisons hold more than one.

  A row "kvp_x - kvp" is the policy kvp_x against the grid's "kvp" (an
  ablation against its base); "kvp - query_free" is KVP against the best
  query-free baseline of each budget, which the mark's verdict is about.
  """
  rows = [c for c in comparisons if c["metric"] in metrics]
  if not rows:
    return []
  tables = collections.defaultdict(list)
  for c in rows:
    tables[(c["suite"], c["metric"], str(c.get("protocol")),
            str(c.get("allocation")))].append(c)
  several_settings = len({key[2:] for key in tables}) > 1
  def row_order(key):
    method, family = key
    return (method != "kvp", method, _family_rank(family, ["kvp", *baseline_families()]),
            family)
  lines = [f"## The paired comparisons at a glance (difference "
           f"[{confidence:.0%} interval]; ▲ better, ▼ worse, = not "
           "distinguishable)", ""]
  for (suite, metric, protocol, allocation), cells in sorted(tables.items()):
    budgets = sorted({str(c["budget"]) for c in cells}, key=budget_order)
    where = (f", protocol {protocol}, allocation {allocation}"
             if several_settings else "")
    lines += [f"### {suite}: {metric}{where}", "",
              "| method - family | " + " | ".join(
                  f"b={b}" for b in budgets) + " |",
              "|---" * (len(budgets) + 1) + "|"]
    keys = sorted({(c.get("method", "kvp"), c["family"]) for c in cells},
                  key=row_order)
    digits = _table_digits(cells)
    for method, family in keys:
      by_budget = {str(c["budget"]): c for c in cells
                   if (c.get("method", "kvp"), c["family"]) == (method,
                                                                family)}
      lines.append(f"| {method} - {family} | " + " | ".join(
          _glance_cell(by_budget.get(b), digits) for b in budgets) + " |")
    lines.append("")
  return lines


def group_markdown(comparisons: Sequence[Mapping],
                   confidence: float = 0.95) -> list[str]:
  """Per-group comparisons at a glance (group_comparisons' entries, whose
  `suite` is "<suite>/<group>"): per (suite, metric, family) one row per
  group, one column per budget, each cell the difference, its interval, the
  mark (▲ better, ▼ worse, = not distinguishable) and the group's best
  baseline. Empty without entries."""
  if not comparisons:
    return []
  tables = collections.defaultdict(list)
  for c in comparisons:
    suite, _, group = str(c["suite"]).partition("/")
    tables[(suite, c["metric"], c["family"])].append(dict(c, group=group))
  methods = " and ".join(sorted({c.get("method", "kvp")
                                 for c in comparisons}))
  lines = [f"## {methods} per group (difference [{confidence:.0%} interval] "
           "against the group's best baseline of the family, named; "
           "▲ better, ▼ worse, = not distinguishable)", ""]
  def table_order(key):
    suite, metric, family = key
    return (suite, metric, _family_rank(family, list(baseline_families())), family)
  for (suite, metric, family), cells in sorted(tables.items(),
                                               key=lambda t: table_order(t[0])):
    budgets = sorted({str(c["budget"]) for c in cells}, key=budget_order)
    digits = _table_digits(cells)
    lines += [f"### {suite}: {metric}, against the best {family} baseline",
              "", "| group | n | " + " | ".join(f"b={b}" for b in budgets)
              + " |", "|---" * (len(budgets) + 2) + "|"]
    for group in sorted({c["group"] for c in cells}):
      by_budget = {str(c["budget"]): c for c in cells if c["group"] == group}
      n = max(c["num_samples"] for c in by_budget.values())
      lines.append(f"| {group} | {n} | " + " | ".join(
          _glance_cell(by_budget.get(b), digits, with_baseline=True)
          for b in budgets) + " |")
    lines.append("")
  return lines


SEED_PREFIX = "kvp_seed"     # Extra policies: the default with other seeds.


def seed_spread_markdown(comparisons: Sequence[Mapping],
                         metrics: Sequence[str] = SUMMARY_METRICS
                         ) -> list[str]:
  """KVP's difference to the best baseline of each family with its interval
  over samples, beside the range of that difference over seeds: "kvp" and
  the extra policies named SEED_PREFIX + seed (the same training with other
  seeds). Empty without such policies."""
  methods = {c.get("method", "kvp") for c in comparisons}
  seeds = sorted(m for m in methods if m.startswith(SEED_PREFIX))
  if not seeds or "kvp" not in methods:
    return []
  cells = {((c["suite"], c["metric"], str(c.get("protocol"))), c["family"],
            str(c["budget"]), c.get("method", "kvp")): c for c in comparisons
           if c["metric"] in metrics}
  lines = []
  several = len({k[0][2] for k in cells}) > 1
  for where in sorted({k[0] for k in cells}):
    suite, metric, protocol = where
    keys = [k for k in cells if k[0] == where]
    budgets = sorted({k[2] for k in keys}, key=budget_order)
    families = sorted({k[1] for k in keys if k[3] == "kvp"},
                      key=lambda f: _family_rank(f, list(baseline_families())))
    lines += [f"## {suite}: {metric}, KVP minus the best baseline over "
              f"{len(seeds) + 1} seeds" +
              (f" (protocol {protocol})" if several else ""), "",
              "The shipped policy's difference [95% interval over samples]; "
              f"then the smallest and largest difference over it and "
              f"{', '.join(seeds)} (the same training, other seeds).", "",
              "| family | " + " | ".join(f"b={b}" for b in budgets) + " |",
              "|---" * (len(budgets) + 1) + "|"]
    for family in families:
      row = []
      for b in budgets:
        spread = [cells[(where, family, b, m)]["difference"]
                  for m in ["kvp", *seeds] if (where, family, b, m) in cells]
        ours = cells.get((where, family, b, "kvp"))
        row.append("" if ours is None else (
            f"{_glance_cell(ours, 2)}; seeds {min(spread):+.2f}.."
            f"{max(spread):+.2f}"))
      lines.append(f"| {family} | " + " | ".join(row) + " |")
    lines.append("")
  return lines
