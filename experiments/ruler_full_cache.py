r"""Full-cache accuracy of Gemma 3 270M on every RULER-style task at 1k, 2k
and 4k tokens: how hard each task is before any eviction (the table in
data_pipelines/README.md).

  python -m kvp_jax.evaluate --config=experiments/ruler_full_cache.py \
      --workdir=runs/ruler_full_cache

Scored as RULER scores (share of reference strings in the greedy answer,
x100). Answers are cut at fewer new tokens than RULER allows for the
needle tasks (48 instead of 128; an answer is a few numbers or words) to fit
a CPU budget.
"""

from experiments import common

MAX_NEW_TOKENS = {
    "niah_single_1": 48, "niah_single_2": 48, "niah_single_3": 48,
    "niah_multikey_1": 48, "niah_multikey_2": 48, "niah_multikey_3": 48,
    "niah_multivalue": 64, "niah_multiquery": 64, "vt": 30, "cwe": 64,
    "fwe": 50}


def get_config():
  c = common.base_config()
  c.eval = common.eval_config(
      suites=[common.ruler_suite(lengths=(1024, 2048, 4096), num_samples=3,
                                 seed=3000, max_new_tokens=MAX_NEW_TOKENS)],
      scorers=[], include_full=True, batch_size=8)
  return c
