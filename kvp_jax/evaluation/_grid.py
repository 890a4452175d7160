"""The grid as data: typed cells, the rows they log, and the resolved grid.

A cell is one thing the evaluation computes for every sample of a suite:

  Cell(suite, scorer, budget, protocol, allocation, settings)

`budget` is the tokens kept per (layer, KV head), FULL for the full cache
(which has no scorer, protocol or allocation: all three are FULL) or, in
the attention-cost suites, ALL (a ranking over every budget, protocol and
allocation RANKING). `settings` is a short hash of what the result depends
on beyond the cell (the model's fingerprint, a policy file's sha256, the
protocol's settings; Grid.settings), so a rerun with another policy never
reuses old rows. Every logged row is made by `Cell.row`, and the sample log
is keyed by `Cell.key` plus the sample and the metric.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib
from typing import Any, Iterator

import jax

from kvp_jax import cache as cache_lib
from kvp_jax import eviction as eviction_lib
from kvp_jax import scorers as scorers_lib

FULL = "full"          # The uncompressed cache: its scorer and budget label.
ALL = "all"            # A ranking cell's budget: every budget at once.
RANKING = "ranking"    # A ranking cell's protocol and allocation.
PRIMARY_METRICS = ("accuracy", "perplexity", "normalised_cost")
OPTIONAL_METRICS = ("fidelity", "evicted_share")
FIDELITY_METRICS = ("agreement", "kl", "fidelity_ll")


@dataclasses.dataclass(frozen=True)
class Cell:
  """One (suite, scorer, budget, protocol, allocation, settings) of a grid.

  Attributes:
    suite: the suite's name.
    scorer: a scorer's name, a policy's ("kvp", "kvp_<label>"), an episodic
      method's, or FULL.
    budget: tokens kept per (layer, KV head); FULL; or a ranking cell's ALL.
    protocol, allocation: the eviction's; FULL for the full cache, RANKING
      for a ranking cell.
    settings: Grid.settings(scorer).
  """
  suite: str
  scorer: str
  budget: int | str
  protocol: str
  allocation: str
  settings: str

  @property
  def full(self) -> bool:
    return self.budget == FULL

  @property
  def seed(self) -> int:
    """A stable per-cell seed (Python's hash() of a str changes per
    process)."""
    return zlib.crc32(f"{self.scorer}|{self.budget}".encode()) % 2**31

  def rng(self, grid_rng: jax.Array) -> jax.Array:
    return jax.random.fold_in(grid_rng, self.seed)

  def key(self) -> dict[str, Any]:
    """The cell's fields as the sample log keys them."""
    return dict(suite=self.suite, scorer=self.scorer, budget=self.budget,
                settings=self.settings, protocol=self.protocol,
                allocation=self.allocation)

  def row(self, item, metric: str, value: float, **extra) -> dict[str, Any]:
    """The one constructor of a logged row: this cell's result for one
    sample (an _suites.Item) and metric, with extra fields after `value`."""
    return dict(suite=self.suite, sample=item.sample.id, group=item.group,
                scorer=self.scorer, budget=self.budget,
                settings=self.settings, protocol=self.protocol,
                allocation=self.allocation, metric=metric, value=value,
                **extra)


@dataclasses.dataclass(frozen=True)
class Evaluated:
  """A cell with what computes it: its scorer (None for the full cache)
  and its Eviction."""
  cell: Cell
  scorer: scorers_lib.Scorer | None
  eviction: eviction_lib.Eviction


@dataclasses.dataclass
class Grid:
  """What to evaluate (the config's `eval` section, resolved).

  scorers: {name: Scorer}, the grid's compressed methods in order; a value
    is None where the grid only reports (nothing computes).
  identity: what makes results reusable by a rerun besides the cell itself
    (the model's fingerprint; per scorer, e.g. the policy file's sha256).
  more_protocols: {suite name: protocols its cells use beside `protocol`}
    (an episodic suite's block-by-block cells and compress-once baselines);
    a report reads that suite's rows of those protocols too.
  """
  scorers: dict[str, scorers_lib.Scorer | None]
  budgets: tuple[int, ...]
  protected: cache_lib.Protected
  protocol: str
  allocation: str
  chunk_size: int
  decode_interval: int
  batch_size: int
  include_full: bool
  seed: int
  identity: dict[str, str] = dataclasses.field(default_factory=dict)
  metrics: tuple[str, ...] = PRIMARY_METRICS
  more_protocols: dict[str, tuple[str, ...]] = dataclasses.field(
      default_factory=dict)

  def __post_init__(self):
    unknown = set(self.metrics) - set(PRIMARY_METRICS + OPTIONAL_METRICS)
    if unknown:
      raise ValueError(f"unknown eval metrics {sorted(unknown)}; known: "
                       f"{PRIMARY_METRICS + OPTIONAL_METRICS}")

  @property
  def fidelity(self) -> bool:
    return "fidelity" in self.metrics

  @property
  def evicted_share(self) -> bool:
    return "evicted_share" in self.metrics

  def settings(self, scorer: str) -> str:
    """A short id of everything a scorer's result depends on beyond its
    cell: a rerun with another policy, model or protocol setting does not
    reuse old results. A scorer's own settings count where it declares
    them (Scorer.identity: those that differ from the settings the earlier
    results were made with)."""
    own = getattr(self.scorers.get(scorer), "identity", dict)()
    text = json.dumps([self.identity.get("model"),
                       self.identity.get(scorer), scorer == FULL or [
                           self.chunk_size, self.decode_interval, self.seed]]
                      + ([own] if own else []))
    return hashlib.sha256(text.encode()).hexdigest()[:12]

  def cell(self, suite: str, scorer: str, budget: int | str,
           protocol: str | None = None) -> Cell:
    """A compressed cell of the grid's protocol (or `protocol`, one of the
    suite's more_protocols) and allocation, or the full cache's (budget
    FULL)."""
    if budget == FULL:
      return Cell(suite, FULL, FULL, FULL, FULL, self.settings(FULL))
    more = self.more_protocols.get(suite, ())
    if protocol not in (None, self.protocol, *more):
      raise ValueError(f"suite {suite}: protocol {protocol!r} is neither the "
                       f"grid's ({self.protocol!r}) nor one of {more}")
    return Cell(suite, scorer, budget, protocol or self.protocol,
                self.allocation, self.settings(scorer))

  def ranking_cell(self, suite: str, scorer: str,
                   budget: int | str = ALL) -> Cell:
    """An attention-cost cell: a scorer's ranking, read at `budget`."""
    return Cell(suite, scorer, budget, RANKING, RANKING,
                self.settings(scorer))

  def full_eviction(self) -> eviction_lib.Eviction:
    return eviction_lib.Eviction(None, protected=self.protected)

  def evictions(self, suite: str) -> Iterator[Evaluated]:
    """Every cell of a generation or perplexity suite, the full cache
    first (when the grid has it), then each scorer at each budget."""
    if self.include_full:
      yield Evaluated(self.cell(suite, FULL, FULL), None,
                      self.full_eviction())
    for name, scorer in self.scorers.items():
      for b in self.budgets:
        yield Evaluated(self.cell(suite, name, b), scorer, eviction_lib.Eviction(
            b, protocol=self.protocol, allocation=self.allocation,
            chunk_size=self.chunk_size, decode_interval=self.decode_interval,
            protected=self.protected))

  def is_current(self, row: dict) -> bool:
    """A logged row of this grid's settings (a report reads only those)."""
    return row.get("settings") == self.settings(row["scorer"]) and (
        row["protocol"] in (FULL, RANKING) or (
            row["protocol"] in (self.protocol,
                            *self.more_protocols.get(row.get("suite"), ())) and
            row["allocation"] == self.allocation))
