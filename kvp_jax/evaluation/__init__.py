"""Evaluation: the grid of scorers x budgets x suites, its resumable
runner, the suites and the report.

The eviction itself (prefill, generation and scoring through a compressed
cache) is kvp_jax.eviction; samples and their scoring are kvp_jax.samples.

  evaluate / run_grid / make_grid   the config's `eval` section, run in a
                                    workdir
  EvalConfig / SuiteConfig / PolicySource
                                    that section, its suites and policies,
                                    typed
  Cell / Grid                       the grid as data (_grid)
  resolve_policies / GridPolicy     a grid's policies, resolved once
  SampleLog                         the per-sample log (_log)
  SuiteKind / register_suite / suite_kinds / build_suite / Item
                                    suite kinds (one module each, registered
                                    on import below) and their samples
  aggregate / markdown              per-sample rows -> tables and plots
"""

from kvp_jax.evaluation._config import EvalConfig
from kvp_jax.evaluation._config import PolicySource
from kvp_jax.evaluation._config import SuiteConfig
from kvp_jax.evaluation._grid import Cell
from kvp_jax.evaluation._grid import Grid
from kvp_jax.evaluation._grid import OPTIONAL_METRICS
from kvp_jax.evaluation._grid import PRIMARY_METRICS
from kvp_jax.evaluation._log import SampleLog
from kvp_jax.evaluation._policies import GridPolicy
from kvp_jax.evaluation._policies import resolve_policies
from kvp_jax.evaluation._report import aggregate
from kvp_jax.evaluation._report import markdown
from kvp_jax.evaluation._runner import evaluate
from kvp_jax.evaluation._runner import make_grid
from kvp_jax.evaluation._runner import output_dir
from kvp_jax.evaluation._runner import run_grid
from kvp_jax.evaluation._suites import build_suite
from kvp_jax.evaluation._suites import Item
from kvp_jax.evaluation._suites import kinds as suite_kinds
from kvp_jax.evaluation._suites import register as register_suite
from kvp_jax.evaluation._suites import SuiteKind
# The suite kinds register themselves.
from kvp_jax.evaluation import _ruler_suite  # pylint: disable=g-bad-import-order
from kvp_jax.evaluation import _perplexity_suite
from kvp_jax.evaluation import _attention_cost_suite
from kvp_jax.evaluation import _episodic_suite
from kvp_jax.evaluation import _long_text_suite
