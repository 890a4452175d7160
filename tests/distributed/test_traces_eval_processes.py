"""The trace job and the evaluation as 2 processes x 2 fake CPU devices
against one process (experiments/tiny.py, a random 3-layer decoder): a
killed 2-process trace job, rerun, leaves the store of one process; the
2-process evaluation writes one process's samples.jsonl and
results.jsonl, byte for byte."""

import json

import pytest

from kvp_jax import traces as traces_lib
from tests.distributed.helpers import launch

OVERRIDES = ["--config=experiments/tiny.py", "--config.traces.batch_size=2",
             "--config.eval.scorers=[knorm,keydiff]",
             "--config.eval.batch_size=1"]


def _store_files(path):
  return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*")
          if p.is_file() and p.name != "metadata.json"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipeline")
  pipeline = ["-m", "kvp_jax.pipeline", "--stages=traces,evaluate",
              *OVERRIDES]
  one, t_one = launch(pipeline + [f"--workdir={root / 'one'}"], 1, 4)
  # Killed part-way: the job stops after 3 of the plan's 4 batches.
  part, t_part = launch(["-m", "data_pipelines.generate_traces", *OVERRIDES,
                         f"--workdir={root / 'two'}", "--max_batches=3"],
                        2, 2)
  partial = traces_lib.TraceStore.open(root / "two" / "traces")
  partial_count = (partial.num_records, partial.num_consolidated)
  two, t_two = launch(pipeline + [f"--workdir={root / 'two'}"], 2, 2)
  print(f"seconds: 1 process {t_one:.0f}, 2 processes killed {t_part:.0f}, "
        f"rerun {t_two:.0f}")
  return root, partial_count, (one, part, two)


def test_killed_trace_job_resumes_to_one_process_store(runs):
  root, (count, merged), (_, part, _) = runs
  ref = traces_lib.TraceStore.open(root / "one" / "traces")
  assert 0 < count < ref.num_records
  assert merged == count               # 3 batches from the start: merged.
  assert "[0] " in part.stdout and "[1] " in part.stdout
  assert not (root / "two" / "traces" / "commits").exists()
  assert _store_files(root / "two" / "traces") == _store_files(
      root / "one" / "traces")
  # Each process held its own writer lock.
  assert (root / "two" / ".traces.writer-1.lock").exists()


def test_evaluation_equals_one_process(runs):
  root, _, (one, _, two) = runs
  for name in ("samples.jsonl", "results.jsonl", "results.md"):
    a = (root / "one" / "eval" / name).read_bytes()
    b = (root / "two" / "eval" / name).read_bytes()
    assert a == b, name
  samples = [json.loads(l) for l in
             (root / "two" / "eval" / "samples.jsonl").read_text().splitlines()]
  assert len({r["sample"] for r in samples}) == 2     # Both batches.
  # The table is printed once, by process 0.
  assert two.stdout.count("| suite") <= 1 or "[1] |" not in two.stdout
  assert "[1] |" not in two.stdout and "[0] |" in two.stdout
