r"""What the recorded traces say before (or after) training: how concentrated
future importance is, which tokens hold it, what each scorer evicts at small
budgets, per-head costs on the global layers, and how a policy's sampled
rankings' cost splits into between- and within-trace variance.

  python -m data_pipelines.trace_diagnostics \
      --config=experiments/ruler_agents.py --workdir=runs/ruler \
      --policy=experiments/results/ruler_agents/policy.kvp

Reads the config's trace store (as training does, from --workdir) and one
split (--split, default validation). Writes OUTPUT_DIR/diagnostics.json and
diagnostics.md (default OUTPUT_DIR: <workdir>/diagnostics). Without
--policy the variance section is left out. The definitions are in
data_pipelines/trace_stats.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config.",
                                          lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's working directory "
                               "(holds the trace store).")
_SPLIT = flags.DEFINE_enum("split", "validation",
                           ["train", "validation", "test"], "Traces to read.")
_POLICY = flags.DEFINE_string("policy", None, "An exported policy: adds it "
                              "as a scorer and the variance section.")
_SCORERS = flags.DEFINE_list("scorers", "random,streaming_llm,knorm,keydiff,"
                             "lagkv", "Query-free scorers to compare.")
_BUDGETS = flags.DEFINE_list("budgets", "64,128,256",
                             "Budgets of the evicted share.")
_FRACTION = flags.DEFINE_float("fraction", 0.01, "Top share of tokens.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 8, "Sampled rankings per "
                                    "trace for the variance.")
_MAX_BATCHES = flags.DEFINE_integer("max_batches", None, "Read at most this "
                                    "many batches.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the report "
                                  "goes (default <workdir>/diagnostics).")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed (random scorer, samples).")


def main(argv):
  del argv
  from kvp_jax import _cli  # pylint: disable=g-import-not-at-top
  if _CONFIG.value is None or not _WORKDIR.value:
    _cli.fail("--config and --workdir are required")
  try:
    budgets = tuple(int(b) for b in _BUDGETS.value)
  except ValueError:
    _cli.fail(f"--budgets: not integers: {_BUDGETS.value}")
  if _NUM_SAMPLES.value < 2:
    _cli.fail("--num_samples must be >= 2 (a variance within a trace)")
  if not 0 < _FRACTION.value <= 1:
    _cli.fail(f"--fraction must be in (0, 1], got {_FRACTION.value}")
  _cli.quiet_library_logs()
  from data_pipelines import diagnostics_job  # pylint: disable=g-import-not-at-top
  try:
    report = diagnostics_job.run(
        _CONFIG.value, _WORKDIR.value, split=_SPLIT.value,
        policy=_POLICY.value, scorers=tuple(_SCORERS.value), budgets=budgets,
        fraction=_FRACTION.value, num_samples=_NUM_SAMPLES.value,
        max_batches=_MAX_BATCHES.value, seed=_SEED.value)
  except (ValueError, OSError) as e:
    _cli.fail(str(e))
  out = Path(_OUTPUT_DIR.value or Path(_WORKDIR.value) / "diagnostics")
  paths = diagnostics_job.write(report, out)
  print(json.dumps({"traces": report["num_traces"],
                    "written": [str(p) for p in paths]}))


if __name__ == "__main__":
  app.run(main)
