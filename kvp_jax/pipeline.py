r"""The whole method in one command: traces -> training -> export -> evaluation.

  python -m kvp_jax.pipeline --config=experiments/quickstart.py \
      --workdir=runs/quickstart

Each stage is the same library call as its own command line
(data_pipelines.generate_traces, kvp_jax.train, kvp_jax.export,
kvp_jax.evaluate) and each reuses finished work, so a rerun is fast and a
killed run continues where it stopped. --stages picks a subset. The trace
store and the evaluation output are locked while written: a second job on
either stops at once, naming the first. Started as N processes
(launch/README.md), every stage runs on all of them; process 0 alone
writes the exported policy and the evaluation's files.
"""

import contextlib
import time
from pathlib import Path

from absl import flags

from kvp_jax import _cli
from kvp_jax import _locks
from kvp_jax import distributed

STAGES = ("traces", "train", "export", "evaluate")

_CONFIG = _cli.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.",
                               required=True)
_STAGES = flags.DEFINE_list("stages", list(STAGES), "Stages to run, in order.")
distributed.define_flags()


def run(config, workdir: str | Path, stages=STAGES, progress: bool = True):
  """Runs the stages in order; returns the evaluation's result rows."""
  # Imported here so that --help is instant.
  from kvp_jax import training  # pylint: disable=g-import-not-at-top
  unknown = set(stages) - set(STAGES)
  if unknown:
    raise ValueError(f"unknown stages {sorted(unknown)}; known: {STAGES}")
  if "traces" in stages:
    _cli.check_sample_files(config.traces.sources)
  policies = None
  if "evaluate" in stages and config.eval.get("role") == "test" and (
      {"traces", "train", "export"} & set(stages)):
    raise ValueError("config.eval.role = 'test' evaluates an already-chosen "
                     "policy: run python -m kvp_jax.evaluate, not the "
                     "pipeline's training stages")
  if "evaluate" in stages:   # Each policy read once, before the model.
    policies = _cli.check_eval_config(config, workdir,
                                      policy_made_later="export" in stages)
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with contextlib.ExitStack() as locks:
    # Taken before the model loads, so that a second job stops at once.
    role = distributed.writer_role()
    if "traces" in stages:
      locks.enter_context(_locks.acquire(training.store_path(config, workdir),
                                         role, what="trace store"))
    if "evaluate" in stages:
      locks.enter_context(_locks.acquire(
          _cli.eval_output_dir(config, workdir), role,
          what="evaluation output"))
    if "train" in stages:
      locks.enter_context(_locks.acquire(workdir, role, what="training run"))
    return _run_stages(config, workdir, stages, progress, policies)


def _run_stages(config, workdir: Path, stages, progress: bool, policies):
  """The stages in order, under the locks taken by `run`; `policies`: the
  evaluation's, resolved by the config check."""
  from kvp_jax import traces as traces_lib  # pylint: disable=g-import-not-at-top
  from kvp_jax import evaluation  # pylint: disable=g-import-not-at-top
  from kvp_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  from kvp_jax import training  # pylint: disable=g-import-not-at-top
  model = None
  rows = None
  for stage in STAGES:
    if stage not in stages:
      continue
    start = time.time()
    print(f"== {stage}", flush=True)
    if stage in ("traces", "evaluate") and model is None:
      model = model_lib.load_model(config.model)
    if stage == "traces":
      store = traces_lib.generate_traces(
          model, config.traces, training.store_path(config, workdir),
          progress=progress)
      print(f"   {store.num_records} traces in {store.path}")
    elif stage == "train":
      summary = training.train_and_evaluate(config, workdir, progress=progress)
      best = (f"best validation reward {summary['best_reward']:.4f} "
              f"(step {summary['best_step']})" if summary["best_reward"]
              is not None else training.describe_summary(summary))
      print(f"   {best}; {workdir / 'validation.md'}")
    elif stage == "export":
      if distributed.is_primary():       # One file per job.
        print(f"   {training.export_policy(workdir)}")
      distributed.sync("policy exported")
    else:
      rows = evaluation.evaluate(config, workdir, model=model,
                                 policies=policies, progress=progress)
    print(f"   {stage}: {time.time() - start:.0f} s", flush=True)
  return rows


def main(argv):
  del argv
  _cli.start_job(_CONFIG)
  run(_CONFIG.value, _WORKDIR.value, _STAGES.value)
  if "evaluate" in _STAGES.value and distributed.is_primary():
    out = _cli.eval_output_dir(_CONFIG.value, _WORKDIR.value)
    print((out / "results.md").read_text(encoding="utf-8"))
    print(f"plots: {', '.join(str(p) for p in sorted(out.glob('*.png')))}")


if __name__ == "__main__":
  _cli.run(main)
