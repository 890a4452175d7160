"""Training as 2 processes x 2 fake CPU devices equals training as 1
process x 4 devices: the same traces in every batch, the same steps, the
same params; process 0 alone writes the run's files."""

import json

import jax
import numpy as np
import pytest

from kvp_jax import training
from tests.distributed.helpers import config_file
from tests.distributed.helpers import launch
from tests.training import synthetic


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("train")
  store = root / "store"
  synthetic.make_store(store, num_traces=40).close()
  cfg = config_file(root / "cfg.py", (
      "__import__('tests.training.synthetic').training.synthetic.tiny_config("
      f"{str(store)!r}, steps=6, eval_every=3, checkpoint_every=3, "
      "max_eval_batches=2, best_per_agent=True)"))
  out = {}
  for name, (n, d) in {"one": (1, 4), "two": (2, 2)}.items():
    proc, seconds = launch(["-m", "kvp_jax.train", f"--config={cfg}",
                            f"--workdir={root / name}"], n, d)
    out[name] = (root / name, proc, seconds)
  return out


def test_same_params_as_one_process(runs):
  one, _, _ = runs["one"]
  two, proc, seconds = runs["two"]
  for which, ema in (("latest", False), ("latest", True), ("best", True)):
    a, step_a = training.restore_params(one, which=which, ema=ema)
    b, step_b = training.restore_params(two, which=which, ema=ema)
    assert step_a == step_b == (6 if which == "latest" else step_a)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a),
                            jax.tree_util.tree_leaves(b)):
      name = jax.tree_util.keystr(path)
      if "'score']['bias'" in name:
        # A ranking does not change when every score shifts: this bias's
        # gradient is zero up to rounding, which Adam turns into steps of
        # +-lr whose sign the reduction order decides.
        assert np.abs(x).max() < 0.02 and np.abs(y).max() < 0.02
        continue
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=name)
  sa = json.loads((one / "summary.json").read_text())
  sb = json.loads((two / "summary.json").read_text())
  assert sa["best_step"] == sb["best_step"]
  assert sa["best_reward"] == pytest.approx(sb["best_reward"], rel=1e-5)
  np.testing.assert_allclose(sa["last_validation"]["policy"],
                             sb["last_validation"]["policy"], rtol=1e-5)
  # Only process 0 printed the result line.
  lines = [l for l in proc.stdout.splitlines() if "per-agent table" in l]
  assert len(lines) == 1 and lines[0].startswith("[0] ")
  print(f"2 processes: {seconds:.0f} s; 1 process: {runs['one'][2]:.0f} s")


def test_two_processes_wrote_one_run(runs):
  two, _, _ = runs["two"]
  for f in ("config.json", "summary.json", "validation.md",
            "validation_history.jsonl", "validation_baselines.json"):
    assert (two / f).is_file(), f
  history = (two / "validation_history.jsonl").read_text().splitlines()
  assert [json.loads(l)["step"] for l in history] == [3, 6]  # Not twice.
  # grain's iterator state: one file per process in the latest checkpoint.
  names = {p.name for p in (two / "checkpoints").glob("*/data/*")}
  assert {"process_0-of-2.json", "process_1-of-2.json"} <= names, names
