"""The evaluation grid: every suite's cells over its samples, resumable, then
the report.

`evaluate` resolves a config once at the top (EvalConfig, the policies and
their artifacts, the protected set, the Grid) and passes objects down;
`run_grid` runs each suite's registered kind (kvp_jax.evaluation._suites)
batch by batch into the sample log (kvp_jax.evaluation._log), then builds
results.jsonl, results.md and the plots (_report) and the verdicts
(verdicts.jsonl, paired bootstrap intervals; _verdicts) from the rows of the
grid's current settings.

Batches of samples of similar length are prefilled once (with the prefill
attention statistics when an attention-based scorer is in the grid) and the
one full cache is compressed by every cell.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import jax
from tqdm import tqdm

from kvp_jax import cache as cache_lib
from kvp_jax import distributed
from kvp_jax import eviction as eviction_lib
from kvp_jax import scorers as scorers_lib
from kvp_jax.evaluation import _episodic_suite
from kvp_jax.evaluation import _log
from kvp_jax.evaluation import _paired
from kvp_jax.evaluation import _policies
from kvp_jax.evaluation import _report
from kvp_jax.evaluation import _suites
from kvp_jax.evaluation import _verdicts
from kvp_jax.evaluation._config import EvalConfig
from kvp_jax.evaluation._grid import Grid
from kvp_jax.model import Pretrained


def run_grid(model: Pretrained, grid: Grid, suites: Sequence[Mapping],
             output_dir: str | os.PathLike[str], *,
             progress: bool = True, title: str = "",
             compute: bool = True, compress_log: bool = False,
             references: Sequence[str] = ("kvp",)) -> list[dict]:
  """Runs every suite, then writes results.jsonl, results.md and plots.

  With compute=False nothing runs: the files are written from the samples
  the log holds so far (a look at a long grid part-way). compress_log:
  fold the log into samples.jsonl.gz at the end. `references`: the
  policies each extra policy is also compared with (EvalConfig.references).
  Returns the aggregated result rows.
  """
  out = Path(output_dir)
  out.mkdir(parents=True, exist_ok=True)
  multi = jax.process_count() > 1
  log = _log.open_log(out / "samples.jsonl")
  rng = jax.random.key(grid.seed)
  for index, suite in enumerate(suites if compute else ()):
    kind = _suites.get_kind(suite["kind"])
    name = _suites.suite_name(suite, index)
    items = _suites.build_suite(suite, model.tokenizer)
    batches = list(kind.batches(items, grid.batch_size))
    run = _suites.SuiteRun(model, grid, name, suite, log, rng, items)
    bar = tqdm(_log.process_batches(batches, log), desc=f"evaluating {name}",
               unit="batch", disable=not progress,
               total=len(distributed.process_shard(len(batches), True)))
    for batch in bar:
      kind.run(run, batch)
  current = [r for r in log.rows if grid.is_current(r)]
  if multi and not distributed.is_primary():
    return distributed.gather_rows([])       # Process 0's rows.
  rows = _report.aggregate(current)
  extra = _verdicts.write(current, rows, out, references=references)
  _report.write(rows, out, title=title, extra=extra)
  if compress_log:
    log.compact()
  return distributed.gather_rows(rows) if multi else rows


def _configured_protected(config) -> cache_lib.Protected | None:
  """The config's protected set (its `input` section), if it names one."""
  section = config.get("input") if hasattr(config, "get") else None
  if section is None or "num_sinks" not in section:
    return None
  return cache_lib.Protected.from_config(section)


def make_grid(ec: EvalConfig, model: Pretrained,
              policies: Mapping[str, _policies.GridPolicy],
              configured: cache_lib.Protected | None = None) -> Grid:
  """The Grid of an `eval` section: the scorers by name (each policy's
  from its artifact; None where a policy was resolved for a report only),
  the protected set (the policies', which a config naming another one may
  not contradict), and the identity of every result.

  Raises:
    ValueError: a bad budget, or protected sets that differ.
  """
  learned, protected = _policies.scorers_for(policies, model)
  if protected is None:
    protected = configured or cache_lib.Protected()
  elif configured is not None:
    configured.check_same(protected, "the policies " + ", ".join(
        p.path for p in policies.values()))
  scorers = {name: learned.get(name) if name in policies
             else scorers_lib.get_scorer(name, **ec.scorer_options.get(name,
                                                                       {}))
             for name in ec.all_scorers}
  identity = {"model": model.fingerprint}
  identity.update({name: p.sha256 for name, p in policies.items()})
  if "kvp" in identity:   # EpiCache + KVP's results depend on KVP's policy.
    identity[_paired.EPICACHE_KVP] = identity["kvp"]
  for b in ec.budgets:                         # Fail early on a bad budget.
    eviction_lib.Eviction(b, protocol=ec.protocol, allocation=ec.allocation,
                          protected=protected)
  return Grid(
      scorers=scorers, protected=protected, budgets=ec.budgets,
      protocol=ec.protocol, allocation=ec.allocation,
      chunk_size=ec.chunk_size, decode_interval=ec.decode_interval,
      batch_size=ec.batch_size, include_full=ec.include_full, seed=ec.seed,
      identity=identity, metrics=ec.metrics,
      more_protocols=more_protocols(ec))


def more_protocols(ec: EvalConfig) -> dict[str, tuple[str, ...]]:
  """{suite name: protocols its cells use beside eval.protocol}: an
  episodic suite's block-by-block cells and its plain_protocols."""
  out = {}
  for index, suite in enumerate(ec.suite_dicts()):
    if suite.get("kind") == "episodic":
      more = tuple(p for p in _episodic_suite.protocols_of(suite)
                   if p != ec.protocol)
      if more:
        out[_suites.suite_name(suite, index)] = more
  return out


def output_dir(ec: EvalConfig, workdir: str | os.PathLike[str]) -> Path:
  """Where an evaluation writes: eval.output_dir, else <workdir>/eval."""
  return Path(ec.output_dir) if ec.output_dir else Path(workdir) / "eval"


def evaluate(config, workdir: str | os.PathLike[str], *,
             model: Pretrained | None = None,
             policies: Mapping[str, _policies.GridPolicy] | None = None,
             progress: bool = True, compute: bool = True) -> list[dict]:
  """The `eval` section of an experiment config, run in a workdir.

  The KVP policy is `eval.policy` ("shipped": the one shipped for the
  model), else <workdir>/policy.kvp, and `eval.policies` add more (scorers
  "kvp_<label>"); `policies` are those already resolved (resolve_policies,
  e.g. by the command line's check before the model loaded), the others
  are resolved here. Results go to
  `eval.output_dir`, else <workdir>/eval. The protected tokens are the
  policies' (a config whose `input` section names other ones is refused),
  else the config's. compute=False writes the report of the samples
  logged so far and runs nothing (run_grid): a policy pinned by sha256
  needs no file then.
  """
  from kvp_jax.model import load_model  # pylint: disable=g-import-not-at-top
  ec = EvalConfig.from_config(config)       # Before the model loads.
  model_name = (config.get("model") or {}).get("name", "gemma3_270m")
  policies = _policies.resolve_policies(ec, workdir, model_name,
                                        load=compute, resolved=policies)
  model = model or load_model(config.model)
  if model.tokenizer is None:
    raise ValueError("evaluation needs a model with a tokenizer")
  grid = make_grid(ec, model, policies, _configured_protected(config))
  title = (f"{model.config.name}: protocol {grid.protocol}, allocation "
           f"{grid.allocation}")
  if not compute:
    title += (" (report of the samples logged so far; the grid is not "
              "necessarily complete)")
  return run_grid(model, grid, ec.suite_dicts(), output_dir(ec, workdir),
                  progress=progress, title=title, compute=compute,
                  compress_log=ec.compress_log, references=ec.references)
