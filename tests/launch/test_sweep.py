"""The sweep launcher on a tiny config: parses a 2x2 grid; runs every point
of a 2-point grid on one shared trace store, skips finished ones when rerun,
gathers one table."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launch import sweep

REPO = Path(__file__).resolve().parents[2]


def test_grid_and_names():
  points = sweep.parse_grid(["train.num_samples=1,2", "policy.use_values=a,b"])
  assert len(points) == 4
  assert sweep.point_name({"train.num_samples": "2", "policy.use_values": "b"}
                          ) == "num_samples=2,use_values=b"
  assert sweep.point_name({"name": "x", "a": 1}) == "x"


def _run(root, *extra):
  return subprocess.run(
      [sys.executable, "-m", "launch.sweep", "--config=experiments/tiny.py",
       "--grid=policy.use_values=true,false",
       f"--root={root}", *extra],
      cwd=REPO, capture_output=True, text=True, timeout=1500,
      env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_sweep_runs_skips_and_gathers(tmp_path):
  root = tmp_path / "sweep"
  proc = _run(root)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  runs = sorted(p.name for p in root.iterdir() if (p / "DONE").is_file())
  assert runs == ["use_values=false", "use_values=true"]
  stores = [p for p in root.iterdir() if p.name.startswith("traces-")]
  assert len(stores) == 1                      # One shared trace store.
  rows = [json.loads(l) for l in
          (root / "sweep_results.jsonl").read_text().splitlines()]
  assert {r["run"] for r in rows} == set(runs)
  table = (root / "sweep_results.md").read_text()
  assert all(run in table for run in runs) and "kvp 32" in table
  # A rerun skips every finished point.
  again = _run(root)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "2 points, 2 already done" in again.stdout


def test_bad_grid(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "launch.sweep", "--grid=nonsense",
       f"--root={tmp_path}", "--config=experiments/tiny.py"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and "not KEY=V1,V2" in proc.stderr


def test_every_shipped_sweep_file_parses_against_its_configs(monkeypatch):
  """Each point of each launch/ sweep file is a valid override set of its
  config, as the pipeline would parse it (a renamed field fails here)."""
  monkeypatch.chdir(REPO)
  for path in ("launch/ablation.py", "launch/cross_eval.py",
               "launch/method_ablations.py"):
    points = sweep.load_sweep(path)
    assert points, path
    for point in points:
      overrides = {k: v for k, v in point.items() if k not in ("config",
                                                               "name")}
      sweep.check_point(point["config"], overrides, sweep.point_name(point))


def test_method_ablation_families():
  from launch import method_ablations  # pylint: disable=g-import-not-at-top
  names = [p["name"] for p in method_ablations.points(["reward"])]
  assert names == ["reward_truncated512", "reward_harmonic"]
  assert {p["name"] for p in method_ablations.get_sweep(
      "families=samples,target")} == {"samples_k4", "target_value_weighted"}
  with pytest.raises(ValueError, match="unknown ablation families"):
    method_ablations.points(["nope"])
  # samples_k4 changes the K = 1 base; every later point is the shipped
  # default (ruler_agents_k4.py) with exactly its own change, on the same
  # config file (one trace store key but for traces.* changes).
  from experiments import ruler_agents_contrast  # pylint: disable=g-import-not-at-top
  from experiments import ruler_agents_k4  # pylint: disable=g-import-not-at-top

  def flat(config):
    return {f"{section}.{field}": value
            for section, fields in config.to_dict().items()
            if isinstance(fields, dict) for field, value in fields.items()}

  default = flat(ruler_agents_k4.get_config())
  for point in method_ablations.points():
    assert point["config"] == method_ablations.BASE
    config = ruler_agents_contrast.get_config()
    for key, value in point.items():
      if key not in ("config", "name"):
        section, field = key.split(".")
        config[section][field] = value
    changed = {k for k, v in flat(config).items() if default[k] != v}
    own = {k for k in point if k not in ("config", "name",
                                         "train.num_samples")}
    # (A change may also set a value equal to the default's, e.g. the
    # truncation budget beside the truncated reward.)
    assert changed <= own, point["name"]
    assert bool(changed) == (point["name"] != "samples_k4"), point["name"]


def test_the_ablation_grid_takes_committed_and_trained_points(tmp_path):
  from experiments import heldout_ablations  # pylint: disable=g-import-not-at-top
  from experiments import policies  # pylint: disable=g-import-not-at-top
  every = dict(heldout_ablations.get_config().eval.policies)
  points = heldout_ablations.committed_points()
  assert set(every) == {"kvp_contrast", "kvp_paper"} | {
      f"kvp_{p}" for p in points}
  # samples_k4 is the shipped policy: "kvp" of the grid, not a point.
  assert "samples_k4" not in points and "position_age" in points
  assert dict(every["kvp_position_age"]) == policies.pinned(
      "ablations/position_age")
  config = heldout_ablations.get_config(
      f"points=position_age,trained=new_point,root={tmp_path}")
  chosen = dict(config.eval.policies)
  assert set(chosen) == {"kvp_contrast", "kvp_paper", "kvp_position_age",
                         "kvp_new_point"}
  assert chosen["kvp_new_point"] == f"{tmp_path}/new_point/policy.kvp"
  with pytest.raises(ValueError, match=r"points: unknown \['mixed_k9'\]"):
    heldout_ablations.get_config("points=position_none,mixed_k9")


def test_the_ablation_grid_keeps_the_named_suites():
  from experiments import heldout_ablations  # pylint: disable=g-import-not-at-top
  every = [s["name"] for s in heldout_ablations.get_config().eval.suites]
  assert set(every) == {"ruler", "dialogues", "attention_cost"}
  kept = [s["name"] for s in heldout_ablations.get_config(
      "suites=attention_cost, ruler").eval.suites]
  assert kept == [n for n in every if n != "dialogues"]
  with pytest.raises(ValueError, match=r"suites: unknown \['chat'\]"):
    heldout_ablations.get_config("suites=ruler,chat")


def test_configs_and_sweeps_read_no_environment_variable():
  """Configs and sweep files are data: what they hold comes from their
  arguments (the launchers, sweep.py and multiprocess.py, pass the
  environment on to the processes they start)."""
  sweeps = [f for f in REPO.glob("launch/*.py")
            if "def get_sweep" in f.read_text()]
  files = [*REPO.glob("experiments/*.py"), *sweeps]
  assert len(sweeps) >= 3 and len(files) > 10
  readers = [f.name for f in files
             if "environ" in f.read_text() or "getenv" in f.read_text()]
  assert not readers


def test_the_cross_grid_adds_the_dialogue_policy_or_refuses(tmp_path):
  from experiments import heldout_cross  # pylint: disable=g-import-not-at-top
  from experiments import policies  # pylint: disable=g-import-not-at-top
  from kvp_jax import _cli  # pylint: disable=g-import-not-at-top
  config = heldout_cross.get_config()
  assert dict(config.eval.policies["kvp_dialogue"]) == policies.pinned(
      "dialogue_agents")
  assert dict(config.eval.policies["kvp_mixed"]) == policies.pinned(
      "mixed_agents")
  assert "kvp_paper" in config.eval.policies
  assert "kvp_mixed_k4" not in config.eval.policies
  assert config.eval.output_dir.endswith("results/heldout")
  missing = heldout_cross.get_config(
      f"dialogue={tmp_path}/missing.kvp,mixed_k4={tmp_path}/k4.kvp,"
      "suites=ruler")
  assert missing.eval.policies["kvp_dialogue"] == f"{tmp_path}/missing.kvp"
  assert missing.eval.policies["kvp_mixed_k4"] == f"{tmp_path}/k4.kvp"
  assert [s["name"] for s in missing.eval.suites] == ["ruler"]
  with pytest.raises(Exception, match=r"missing\.kvp"):
    _cli.check_eval_config(missing, tmp_path)  # evaluate refuses it.


def test_a_sweep_file_takes_an_argument():
  from launch import sweep  # pylint: disable=g-import-not-at-top
  from launch import method_ablations  # pylint: disable=g-import-not-at-top
  points = sweep.load_sweep(f"{REPO}/launch/method_ablations.py:families=reward")
  assert points == method_ablations.points(["reward"])
  assert len(sweep.load_sweep(f"{REPO}/launch/method_ablations.py")) == len(
      method_ablations.points())
  with pytest.raises(ValueError, match="unknown ablation families"):
    sweep.load_sweep(f"{REPO}/launch/method_ablations.py:families=nosuch")


def test_the_mixed_agents_pool_both_sources_each_split_its_own_way():
  from experiments import dialogue_agents  # pylint: disable=g-import-not-at-top
  from experiments import mixed_agents  # pylint: disable=g-import-not-at-top
  from experiments import ruler_agents_contrast  # pylint: disable=g-import-not-at-top
  from kvp_jax import traces as traces_lib  # pylint: disable=g-import-not-at-top
  mixed = mixed_agents.get_config()
  ruler = ruler_agents_contrast.get_config()
  dialogues = dialogue_agents.get_config()
  assert mixed.policy == ruler.policy and mixed.train == ruler.train
  assert mixed.input == dialogues.input
  sources = list(mixed.traces.sources)
  assert len(sources) == 2
  assert [traces_lib.split_settings(mixed.traces, s) for s in sources] == [
      traces_lib.split_settings(ruler.traces, ruler.traces.sources[0]),
      traces_lib.split_settings(dialogues.traces,
                                dialogues.traces.sources[0])] == [
                                    (0, 64), (4, 256)]
  # Recorded as each single-source store was, so their traces can be
  # copied (traces.reuse): the recording settings are the same.
  def recorded_as(section):
    settings = traces_lib.recording_settings(section)
    for key in ("num_random_splits", "min_prompt_length"):
      del settings["generation"][key]
    return settings, section.kv_dtype, section.with_kv

  for single in (ruler, dialogues):
    assert recorded_as(single.traces) == recorded_as(mixed.traces)
  # The K = 4 run changes only K: same store, agent and schedule.
  from experiments import mixed_agents_k4  # pylint: disable=g-import-not-at-top
  k4 = mixed_agents_k4.get_config()
  assert k4.train.num_samples == 4 and mixed.train.num_samples == 1
  k4.train.num_samples = 1
  assert k4 == mixed


def test_done_records_the_stages_run(tmp_path, monkeypatch):
  """A point run for its traces only is not skipped when training is asked
  for next; both runs' stages are kept; a DONE without stages counts as all."""
  monkeypatch.setattr(sweep, "_PARALLEL", type("F", (), {"value": 1})())
  point = tmp_path / "p"
  assert not sweep.is_done(point, ["traces"])
  ok = [sys.executable, "-c", "pass"]
  assert sweep.run_point(ok, point, 0, ["traces"]) == 0
  assert sweep.is_done(point, ["traces"])
  assert not sweep.is_done(point, ["train", "export"])
  assert sweep.run_point(ok, point, 0, ["train", "export"]) == 0
  assert sweep.done_stages(point) == {"traces", "train", "export"}
  assert sweep.is_done(point, ["traces", "train", "export"])
  assert not sweep.is_done(point, ["train", "evaluate"])
  failing = [sys.executable, "-c", "raise SystemExit(3)"]
  assert sweep.run_point(failing, point, 0, ["evaluate"]) == 3
  assert not sweep.is_done(point, ["evaluate"])    # Not recorded on failure.
  (point / "DONE").write_text("2026-12-05T10:44:48\n")
  assert sweep.is_done(point, ["traces", "train", "export", "evaluate"])


def test_the_default_k_is_the_shipped_policys_ablation_point():
  """The project's default K = 4; the shipped policy's experiment is the
  samples_k4 ablation point (its committed policy, byte for byte), and the
  experiments whose committed results were trained with K = 1 pin it."""
  from experiments import common  # pylint: disable=g-import-not-at-top
  from experiments import quickstart  # pylint: disable=g-import-not-at-top
  from experiments import ruler_agents_contrast  # pylint: disable=g-import-not-at-top
  from experiments import ruler_agents_k4  # pylint: disable=g-import-not-at-top
  from kvp_jax import policy as policy_lib  # pylint: disable=g-import-not-at-top
  from launch import method_ablations  # pylint: disable=g-import-not-at-top
  assert common.train_config().num_samples == common.DEFAULT_NUM_SAMPLES == 4
  assert ruler_agents_contrast.get_config().train.num_samples == 1
  assert quickstart.get_config().train.num_samples == 1
  (point,) = method_ablations.points(["samples"])
  assert point["config"] == "experiments/ruler_agents_contrast.py"
  want = ruler_agents_contrast.get_config()
  for key, value in point.items():
    if key not in ("config", "name"):
      section, field = key.split(".")
      want[section][field] = value
  assert ruler_agents_k4.get_config() == want
  (entry,) = policy_lib.shipped_policies()
  assert entry.experiment == "experiments/ruler_agents_k4.py"
  from experiments import policies  # pylint: disable=g-import-not-at-top
  assert entry.sha256 == policies.SHA256["ablations/" + point["name"]]
