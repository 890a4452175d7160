r"""Records traces of the frozen decoder into a tensorstore trace store.

  python -m data_pipelines.generate_traces --config=experiments/ruler_agents.py \
      --workdir=runs/ruler

The config's `traces` section names the sample sources and the generation
settings; the store goes to `traces.store`, or <workdir>/traces. Rerunning
continues a killed job and does nothing for a finished one; a store made with
another model or other settings is refused, and so is a second job on a
store that one is writing (it stops at once, naming the first).

Started as N processes (launch/README.md), process i records batches
i, i+N, ... of the global plan into the one store (on a file system that
every process sees).
"""

from pathlib import Path

from absl import flags

from kvp_jax import _cli
from kvp_jax import _locks
from kvp_jax import distributed
from kvp_jax import model as model_lib
from kvp_jax import traces as traces_lib

_CONFIG = _cli.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.")
_MAX_BATCHES = flags.DEFINE_integer("max_batches", None,
                                    "Stop after this many new batches.",
                                    lower_bound=1)
distributed.define_flags()


def store_path(config, workdir: str | None) -> Path:
  if config.traces.store:
    return Path(config.traces.store)
  if not workdir:
    _cli.fail("give --workdir or set --config.traces.store")
  return Path(workdir) / "traces"


def main(argv):
  del argv
  config = _cli.start_job(_CONFIG)
  path = store_path(config, _WORKDIR.value)
  _cli.check_sample_files(config.traces.sources)
  # Locked before the model loads, so that a second job stops at once.
  with _locks.acquire(path, distributed.writer_role(), what="trace store"):
    model = model_lib.load_model(config.model)
    store = traces_lib.generate_traces(model, config.traces, path,
                                      max_batches=_MAX_BATCHES.value)
    store.close()
  if not distributed.is_primary():
    return
  print(f"{path}: {store.num_records} traces "
        f"({', '.join(f'{s}: {len(store.records_in(s))}' for s in traces_lib.SPLITS)}); "
        f"{store.num_bytes() / 2**20:.1f} MiB")


if __name__ == "__main__":
  _cli.run(main)
