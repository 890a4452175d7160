"""Evaluation: the grid of scorers x budgets x suites, its resumable
runner, the suites and the report.

The eviction itself (prefill, generation and scoring through a compressed
cache) is kvp_jax.eviction; samples and their scoring are kvp_jax.samples.

  evaluate / run_grid / Grid   the config's `eval` section, run in a workdir
  EvalConfig / SuiteConfig     that section and its suites, typed
  build_suite / Item           a suite's prepared samples
  aggregate / markdown         per-sample rows -> tables and plots
"""

from kvp_jax.evaluation._config import EvalConfig
from kvp_jax.evaluation._config import OPTIONAL_METRICS
from kvp_jax.evaluation._config import PRIMARY_METRICS
from kvp_jax.evaluation._config import SUITE_KINDS
from kvp_jax.evaluation._config import SuiteConfig
from kvp_jax.evaluation._report import aggregate
from kvp_jax.evaluation._report import markdown
from kvp_jax.evaluation._runner import evaluate
from kvp_jax.evaluation._runner import Grid
from kvp_jax.evaluation._runner import make_scorers
from kvp_jax.evaluation._runner import run_grid
from kvp_jax.evaluation._runner import SampleLog
from kvp_jax.evaluation._suites import build_suite
from kvp_jax.evaluation._suites import Item
