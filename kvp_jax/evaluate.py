r"""Evaluates eviction scorers over a grid of cache budgets and suites.

  python -m kvp_jax.evaluate --config=experiments/ruler_agents.py \
      --workdir=runs/ruler

Runs the config's `eval` section: every scorer x budget (+ the full cache)
on every suite (RULER-style accuracy, perplexity of reference
continuations, normalised future-attention cost). Writes
<workdir>/eval/{samples.jsonl, results.jsonl, results.md, <suite>.png};
rerunning continues an interrupted evaluation.
"""

from pathlib import Path

from absl import app
from absl import flags
from ml_collections import config_flags

from kvp_jax import _cli
from kvp_jax import evaluation
from kvp_jax import policy as policy_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config.",
                                          lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.",
                               required=True)


def main(argv):
  del argv
  if _CONFIG.value is None:
    _cli.fail("--config is required")
  _cli.quiet_library_logs()
  try:
    evaluation.evaluate(_CONFIG.value, _WORKDIR.value)
  except (ValueError, FileNotFoundError, policy_lib.ArtifactError) as e:
    _cli.fail(str(e))
  out = Path(_CONFIG.value.eval.output_dir or Path(_WORKDIR.value) / "eval")
  print((out / "results.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
  app.run(main)
