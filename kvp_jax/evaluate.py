r"""Evaluates eviction scorers over a grid of cache budgets and suites.

  python -m kvp_jax.evaluate --config=experiments/ruler_agents.py \
      --workdir=runs/ruler

Runs the config's `eval` section: every scorer x budget (+ the full cache)
on every suite (RULER-style accuracy, perplexity of reference
continuations, normalised future-attention cost). Writes
<workdir>/eval/{samples.jsonl, results.jsonl, results.md, <suite>.png};
rerunning continues an interrupted evaluation. One evaluation writes an
output directory at a time: a second one stops at once, naming the first.
--report_only writes the files from the samples logged so far and computes
nothing (the tables of a long grid part-way; their sample counts say how
far it is). It takes the output's lock like any evaluation, so stop a
running one first (Ctrl-C; rerunning continues it).

Started as N processes (launch/README.md), each evaluates its share of
the batches; process 0 merges the rows and writes every file.
"""

from absl import flags

from kvp_jax import _cli
from kvp_jax import distributed
from kvp_jax import _locks
from kvp_jax import evaluation

_CONFIG = _cli.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.",
                               required=True)
_REPORT_ONLY = flags.DEFINE_bool(
    "report_only", False, "Write results.md, results.jsonl, the verdicts "
    "and the plots from the samples already in the log; compute nothing.")
distributed.define_flags()


def main(argv):
  del argv
  config = _cli.start_job(_CONFIG)
  compute = not _REPORT_ONLY.value
  # Before the model loads: the config, and each policy read once.
  policies = _cli.check_eval_config(config, _WORKDIR.value, load=compute)
  out = _cli.eval_output_dir(config, _WORKDIR.value)
  with _locks.acquire(out, distributed.writer_role(),
                      what="evaluation output"):
    evaluation.evaluate(config, _WORKDIR.value, policies=policies,
                        compute=compute)
  if not distributed.is_primary():
    return
  print((out / "results.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
  _cli.run(main)
