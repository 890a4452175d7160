"""What training and export check before writing anything: the store's
model and recording settings, a resumed workdir's config, the artifact's
shapes; and a run stopped before its first validation."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kvp_jax import policy as policy_lib
from kvp_jax import traces as traces_lib
from kvp_jax import training
from tests.training import synthetic

REPO = Path(__file__).resolve().parents[2]


def _config(store, **train):
  return synthetic.tiny_config(store, **dict(
      dict(steps=4, eval_every=2, checkpoint_every=2), **train))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A finished 4-step run: (store path, workdir)."""
  root = tmp_path_factory.mktemp("run")
  synthetic.make_store(root / "traces", num_traces=16)
  training.train_and_evaluate(_config(root / "traces"), root / "run",
                              progress=False)
  return root / "traces", root / "run"


def test_train_refuses_a_store_of_another_model(tmp_path):
  metadata = training.expected_store_metadata(_config(tmp_path / "traces"))
  del metadata["layout"]
  metadata["model"] = {"name": "gemma3_270m", "fingerprint": "0123456789abcdef",
                       "compute_dtype": "float32"}
  synthetic.make_store(tmp_path / "traces", num_traces=8, metadata=metadata)
  with pytest.raises(traces_lib.StoreError,
                     match=r"recorded with another model .*: model\.name: "
                           r"store has 'gemma3_270m', config has 'tiny'; "
                           r"model\.fingerprint: store has '0123456789abcdef', "
                           r"config has '[0-9a-f]{16}'$"):
    training.train_and_evaluate(_config(tmp_path / "traces"), tmp_path / "run",
                                progress=False)
  assert not (tmp_path / "run").exists()       # Nothing written.


def test_train_refuses_other_recording_settings(tmp_path):
  recorded = _config(tmp_path / "traces")
  recorded.traces.max_new_tokens = 16
  recorded.traces.seed = 5
  metadata = training.expected_store_metadata(recorded)
  del metadata["layout"]
  synthetic.make_store(tmp_path / "traces", num_traces=8, metadata=metadata)
  with pytest.raises(traces_lib.StoreError,
                     match=r"generation\.max_new_tokens: store has 16, config "
                           r"has 64; seed: store has 5, config has 0$"):
    training.train_and_evaluate(_config(tmp_path / "traces"), tmp_path / "run",
                                progress=False)


@pytest.mark.parametrize("recorded,wanted", [("attention", "value_weighted"),
                                             ("value_weighted", "attention")])
def test_train_refuses_a_store_of_the_other_target(tmp_path, recorded, wanted):
  """The target is in a store's metadata only when it is not the paper's;
  either way round, a mismatch is refused."""
  config = _config(tmp_path / "traces")
  config.traces.target = recorded
  metadata = training.expected_store_metadata(config)
  del metadata["layout"]
  synthetic.make_store(tmp_path / "traces", num_traces=8, metadata=metadata)
  config.traces.target = wanted
  with pytest.raises(traces_lib.StoreError,
                     match=rf"target: store has .*{recorded}.*, config has "
                           rf".*{wanted}"):
    training.train_and_evaluate(config, tmp_path / "run", progress=False)


def test_a_run_from_before_traces_target_resumes():
  from kvp_jax.training import _loop, _rundir  # pylint: disable=g-import-not-at-top
  config = _config("unused")
  new = json.loads(config.to_json_best_effort())
  old = json.loads(config.to_json_best_effort())
  del old["traces"]["target"]
  assert _rundir.config_differences(old, new,
                                    _loop.ADDED_FIELD_DEFAULTS) == []
  new["traces"]["target"] = "value_weighted"
  assert _rundir.config_differences(old, new, _loop.ADDED_FIELD_DEFAULTS)
  for field in _loop.ADDED_FIELD_DEFAULTS:     # Each is still a field.
    section, name = field.split(".")
    assert name in config[section], field


def test_refused_train_leaves_config_json_untouched(run, tmp_path):
  store, workdir = run
  before = (workdir / "config.json").read_bytes()
  other = _config(store)
  other.policy.hidden = 64
  other.train.learning_rate = 1e-3
  other.train.stop_after = 2          # May differ: not part of the run.
  other.eval.budgets = [8]            # Not a training field either.
  with pytest.raises(training.ConfigMismatch,
                     match=r"holds a run of another config; refusing to resume "
                           r"it \(use another --workdir\): policy\.hidden: run "
                           r"has 32, config has 64; train\.learning_rate: run "
                           r"has 0\.003, config has 0\.001$"):
    training.train_and_evaluate(other, workdir, progress=False)
  assert (workdir / "config.json").read_bytes() == before
  # A refused store leaves it as it was too.
  bad = _config(tmp_path / "missing")
  with pytest.raises(traces_lib.StoreError):
    training.train_and_evaluate(bad, workdir, progress=False)
  assert (workdir / "config.json").read_bytes() == before


def test_rerun_of_the_same_config_is_accepted(run):
  store, workdir = run
  summary = training.train_and_evaluate(_config(store), workdir,
                                        progress=False)
  assert summary["last_step"] == 4


def test_stop_after_before_the_first_validation(tmp_path):
  synthetic.make_store(tmp_path / "traces", num_traces=16)
  cfg = lambda **kw: _config(tmp_path / "traces", steps=6, eval_every=4,
                             checkpoint_every=4, **kw)
  summary = training.train_and_evaluate(cfg(stop_after=3), tmp_path / "run",
                                        progress=False)
  assert summary["best_reward"] is None and summary["best_step"] is None
  assert "no validation yet" in training.describe_summary(summary)
  _, step = training.restore_params(tmp_path / "run", which="latest")
  assert step == 3
  with pytest.raises(FileNotFoundError, match="no best checkpoint"):
    training.restore_params(tmp_path / "run", which="best")
  summary = training.train_and_evaluate(cfg(), tmp_path / "run",
                                        progress=False)
  assert summary["best_step"] in (4, 6)
  assert training.describe_summary(summary).startswith(
      "best validation reward ")


def _mismatched_copy(workdir, tmp_path):
  """A copy of the run whose config.json says hidden=64 (weights: 32)."""
  import shutil  # pylint: disable=g-import-not-at-top
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  config = json.loads((copy / "config.json").read_text())
  config["policy"]["hidden"] = 64
  (copy / "config.json").write_text(json.dumps(config))
  return copy


def test_export_refuses_params_that_do_not_fit_the_config(run, tmp_path):
  copy = _mismatched_copy(run[1], tmp_path)
  with pytest.raises(policy_lib.ArtifactError,
                     match=r"do not match its agent config .*agents/mlp_0/"
                           r"kernel has shape \(2, (\d+), 32\), the config "
                           r"needs \(2, \1, 64\)"):
    training.export_policy(copy, tmp_path / "p.kvp")
  assert not (tmp_path / "p.kvp").exists()


def test_load_refuses_params_that_do_not_fit_the_config(run, tmp_path):
  art = policy_lib.load_artifact(training.export_policy(run[1],
                                                        tmp_path / "p.kvp"))
  import flax.serialization  # pylint: disable=g-import-not-at-top
  record = flax.serialization.msgpack_restore(
      (tmp_path / "p.kvp").read_bytes())
  record["agent_config"]["position_dim"] = 4
  bad = tmp_path / "bad.kvp"
  bad.write_bytes(flax.serialization.msgpack_serialize(record))
  rows = art.agent_config.max_position      # Trimmed on export.
  with pytest.raises(policy_lib.ArtifactError,
                     match=rf"bad\.kvp: .*position_embed/embedding has shape "
                           rf"\(2, {rows}, 8\), the config needs "
                           rf"\(2, {rows}, 4\)"):
    policy_lib.load_artifact(bad)
  assert art.agent_config.position_dim == 8


def test_export_cli_is_quiet_and_refuses_in_one_line(run, tmp_path):
  copy = _mismatched_copy(run[1], tmp_path)
  proc = subprocess.run(
      [sys.executable, "-m", "kvp_jax.export", f"--workdir={copy}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu"))
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), lines
  assert re.search(r"mlp_0/kernel has shape \(2, (\d+), 32\), "
                   r"the config needs \(2, \1, 64\)", lines[0]), lines[0]
  assert not (copy / "policy.kvp").exists()


def test_a_train_field_added_since_the_run_takes_its_default():
  from kvp_jax.training import _rundir  # pylint: disable=g-import-not-at-top
  old = {"train": {"steps": 4}}
  defaults = {"train.best_per_agent": False}
  assert _rundir.config_differences(
      old, {"train": {"steps": 4, "best_per_agent": False}}, defaults) == []
  assert _rundir.config_differences(
      old, {"train": {"steps": 4, "best_per_agent": True}}, defaults) == [
          "train.best_per_agent: run has False, config has True"]
