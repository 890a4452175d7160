r"""Full-cache accuracy of Gemma 3 270M on every RULER-style task from 1k to
32k tokens: how hard each task is before any eviction, and which tasks the
model still solves at each length (where answer retention can be measured).

  python -m kvp_jax.evaluate --config=experiments/ruler_full_cache.py \
      --workdir=runs/ruler_full_cache
  python -m kvp_jax.evaluate --workdir=runs/ruler_full_cache \
      --config=experiments/ruler_full_cache.py:lengths=4096,8192

Results: experiments/results/ruler_full_cache/ (one group per task and
length; the log resumes, and a run at other lengths adds to it).

Scored as RULER scores (share of reference strings in the greedy answer,
x100). Answers are cut at fewer new tokens than RULER allows for the
needle tasks (48 instead of 128; an answer is a few numbers or words) to fit
a CPU budget.
"""

from experiments import common
from kvp_jax import configs

LENGTHS = ("1024", "2048", "4096", "8192", "16384", "32768")

MAX_NEW_TOKENS = {
    "niah_single_1": 48, "niah_single_2": 48, "niah_single_3": 48,
    "niah_multikey_1": 48, "niah_multikey_2": 48, "niah_multikey_3": 48,
    "niah_multivalue": 64, "niah_multiquery": 64, "vt": 30, "cwe": 64,
    "fwe": 50}


def get_config(arg=None):
  """arg: "lengths=4096,8192" (default: every length of LENGTHS)."""
  lengths = configs.parse_config_arg(arg, lengths=list(LENGTHS))["lengths"]
  c = common.base_config()
  c.eval = common.eval_config(
      suites=[common.ruler_suite(lengths=tuple(int(n) for n in lengths),
                                 num_samples=3, seed=3000,
                                 max_new_tokens=MAX_NEW_TOKENS)],
      scorers=[], include_full=True, batch_size=4,
      output_dir="experiments/results/ruler_full_cache", compress_log=True)
  return c
