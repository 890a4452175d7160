"""The "long_text" suite kind: long natural text (documents or dialogues
packed to 4k-32k tokens), its reference continuation scored through every
cell, at the grid's fixed budgets and at budgets that are fixed ratios of
each sample's context.

A perplexity suite whose budgets also scale with the length: with ratios
(1/8, 1/4), a cell keeps round(ratio * prompt tokens) tokens per (layer, KV
head) (at least the protected ones), labelled "1/8" and "1/4" in the
results, so one table reads the same share of the context at every length.
Teacher-forced perplexity needs no right answer from the model, so every
length has a suite (with eval.metrics "fidelity": agreement and KL with the
full cache too). Run it with eval.protocol "chunked" to read the context as
users do at length: the cache never holds more than budget + chunk_size
slots per head.

  {"kind": "long_text", "sources": [documents or dialogues sources at
   lengths 4096..32768], "ratios": [0.125, 0.25]}
"""

from __future__ import annotations

import fractions
from typing import Any, Mapping, Sequence

from kvp_jax import eviction as eviction_lib
from kvp_jax.evaluation import _perplexity_suite
from kvp_jax.evaluation import _suites
from kvp_jax.evaluation._grid import Evaluated


def ratio_label(ratio: float) -> str:
  """"1/8" for 0.125: the budget label of a ratio cell."""
  return str(fractions.Fraction(ratio).limit_denominator(1024))


@_suites.register
class LongTextSuite(_perplexity_suite.PerplexitySuite):
  kind = "long_text"

  def samples(self, suite: Mapping[str, Any], samples: list, tokenizer):
    for r in suite.get("ratios") or ():
      if not 0 < float(r) <= 1:
        raise ValueError(f"suite {suite.get('name', self.kind)!r}: ratio "
                         f"{r} is not in (0, 1]")
    return super().samples(suite, samples, tokenizer)

  def batches(self, items: Sequence[_suites.Item], size: int):
    """Batches of one group (task and target length) each, so that a
    ratio's budget is that of every sample in the batch."""
    groups: dict[str, list] = {}
    for item in items:
      groups.setdefault(item.group, []).append(item)
    for group in groups.values():
      yield from super().batches(group, size)

  def run(self, run: _suites.SuiteRun,
          batch: Sequence[_suites.Item]) -> None:
    cells = list(run.grid.evictions(run.suite)) + ratio_cells(
        run, batch, run.settings.get("ratios") or ())
    _perplexity_suite.score_cells(run, batch, cells)


def ratio_cells(run: _suites.SuiteRun, batch: Sequence[_suites.Item],
                ratios: Sequence[float]) -> list[Evaluated]:
  """Each scorer at each ratio of the batch's longest prompt (a batch holds
  samples of one target length)."""
  grid = run.grid
  tokens = max(len(i.prompt) for i in batch)
  out = []
  for name, scorer in grid.scorers.items():
    for r in ratios:
      budget = max(grid.protected.size, round(float(r) * tokens))
      out.append(Evaluated(
          grid.cell(run.suite, name, ratio_label(float(r))), scorer,
          eviction_lib.Eviction(
              budget, protocol=grid.protocol, allocation=grid.allocation,
              chunk_size=grid.chunk_size,
              decode_interval=grid.decode_interval,
              protected=grid.protected)))
  return out
