r"""How many samples a suite needs for paired intervals of a given width.

  python -m kvp_jax.sample_size --results=experiments/results/heldout \
      --metrics=agreement --half_width=2

Reads the verdicts of an evaluation (<results>/verdicts.jsonl, written by
python -m kvp_jax.evaluate, or that file itself): KVP against every
baseline, each comparison's interval and sample count. Prints, per suite and
metric, how many samples the comparisons need for 95% intervals of
+- --half_width (the metric's units: agreement and retention in points), by
the interval's 1 / sqrt(n) narrowing
(kvp_jax.evaluation._sample_size). Use it on a dev run to size the test run.
"""

from pathlib import Path

from absl import flags

from kvp_jax import _cli
from kvp_jax import _files
from kvp_jax.evaluation import _sample_size

_RESULTS = flags.DEFINE_string(
    "results", None, "An evaluation's output directory (or its "
    "verdicts.jsonl).", required=True)
_METRICS = flags.DEFINE_list("metrics", ["agreement"], "Metrics to size "
                             "(empty: every metric of the verdicts).")
_HALF_WIDTH = flags.DEFINE_float("half_width", 2.0, "Target half-width of "
                                 "the paired 95% intervals.")


def main(argv):
  del argv
  path = Path(_RESULTS.value)
  if path.is_dir():
    path = path / "verdicts.jsonl"
  if not path.is_file():
    _cli.fail(f"--results={_RESULTS.value}: no {path} (run python -m "
              "kvp_jax.evaluate first)")
  if not _HALF_WIDTH.value > 0:
    _cli.fail(f"--half_width={_HALF_WIDTH.value} is not > 0")
  verdicts = _files.read_jsonl(path)
  comparisons = _sample_size.comparisons_of(verdicts, _METRICS.value)
  if not comparisons:
    present = sorted({str(r.get("metric")) for r in verdicts
                      if r.get("kind") in _sample_size.KINDS})
    _cli.fail(f"{path}: no paired comparisons of --metrics="
              f"{','.join(_METRICS.value)} (it has: {', '.join(present)})")
  summary = _sample_size.summarise(comparisons, _HALF_WIDTH.value)
  print(_sample_size.markdown(summary, _HALF_WIDTH.value), end="")


if __name__ == "__main__":
  _cli.run(main)
