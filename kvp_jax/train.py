r"""Trains KV Policy agents on recorded traces.

  python -m kvp_jax.train --config=experiments/ruler_agents.py \
      --workdir=runs/ruler --config.train.steps=1000

The traces come from `config.traces.store` or <workdir>/traces (made by
`python -m data_pipelines.generate_traces` with the same config). Rerunning
with the same --workdir resumes from its latest checkpoint.

Started as N processes (launch/README.md), the steps run over one mesh of
every process's devices; process 0 writes the summaries and tables.
"""

from absl import flags

from kvp_jax import _cli
from kvp_jax import _locks
from kvp_jax import distributed
from kvp_jax import traces as traces_lib
from kvp_jax import training

_CONFIG = _cli.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.",
                               required=True)
distributed.define_flags()


def main(argv):
  del argv
  config = _cli.start_job(_CONFIG)
  _cli.check_sample_files(config.traces.sources)   # No test samples.
  try:
    # One training job per run directory (a second one stops at once).
    with _locks.acquire(_WORKDIR.value, distributed.writer_role(),
                        what="training run"):
      summary = training.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (traces_lib.StoreError, ValueError) as e:
    _cli.fail(str(e))
  except training.TrainingDiverged as e:
    _cli.fail(str(e))
  if not distributed.is_primary():
    return
  print(f"{training.describe_summary(summary)}; per-agent table: "
        f"{_WORKDIR.value}/validation.md")


if __name__ == "__main__":
  _cli.run(main)
