"""Frozen test files: every tool that chooses refuses them, and only a test
evaluation config for a named policy reads them."""

import hashlib
import json

import pytest

from experiments import common
from kvp_jax import evaluation
from kvp_jax.samples import frozen


def _frozen_dir(tmp_path):
  data = tmp_path / "suite"
  data.mkdir(parents=True)
  (data / "a.jsonl").write_text('{"id": "x"}\n')
  digest = hashlib.sha256((data / "a.jsonl").read_bytes()).hexdigest()
  (data / "manifest.json").write_text(json.dumps(
      {"role": "test", "files": [{"name": "a.jsonl", "sha256": digest}]}))
  (data / "other.jsonl").write_text("")               # Not listed.
  return data


def test_listed_files_are_test_files_and_their_hashes_hold(tmp_path):
  data = _frozen_dir(tmp_path)
  sources = [{"kind": "jsonl", "paths": [str(data / "other.jsonl"),
                                         str(data / "a.jsonl")]},
             {"kind": "ruler", "tasks": ["vt"]}]
  assert frozen.test_files(sources) == [str(data / "a.jsonl")]
  with pytest.raises(ValueError, match=r"traces.sources: .*a\.jsonl is a "
                     "frozen test file"):
    frozen.refuse_test_files(sources, "traces.sources")
  frozen.check_frozen(data / "manifest.json")
  (data / "a.jsonl").write_text('{"id": "y"}\n')
  with pytest.raises(ValueError, match="a frozen file changed"):
    frozen.check_frozen(data / "manifest.json")


def _config(tmp_path, role, policy):
  data = _frozen_dir(tmp_path)
  c = common.base_config()
  c.eval = common.eval_config(
      suites=[{"kind": "ruler", "name": "t", "sources": [
          {"kind": "jsonl", "paths": [str(data / "a.jsonl")]}]}],
      scorers=["kvp", "knorm"], policy=policy)
  c.eval.role = role
  return c


def test_only_a_test_config_with_a_named_policy_reads_them(tmp_path):
  with pytest.raises(ValueError, match="frozen test file"):
    evaluation.EvalConfig.from_config(_config(tmp_path / "a", "dev",
                                              "shipped"))
  with pytest.raises(ValueError, match="already-chosen policy"):
    evaluation.EvalConfig.from_config(_config(tmp_path / "b", "test", ""))
  ec = evaluation.EvalConfig.from_config(_config(tmp_path / "c", "test",
                                                 "shipped"))
  assert ec.role == "test"
  with pytest.raises(ValueError, match="role"):
    evaluation.EvalConfig.from_config(_config(tmp_path / "d", "final",
                                              "shipped"))


def test_a_sweep_refuses_test_samples(tmp_path):
  from launch import sweep  # pylint: disable=g-import-not-at-top
  _frozen_dir(tmp_path)
  cfg = tmp_path / "cfg.py"
  cfg.write_text(
      "from experiments import common\n"
      "def get_config():\n"
      "  c = common.base_config()\n"
      f"  c.traces.sources = [{{'kind': 'jsonl', 'paths': "
      f"['{tmp_path / 'suite' / 'a.jsonl'}']}}]\n"
      "  return c\n")
  with pytest.raises(ValueError, match="point p: .*frozen test file"):
    sweep.check_point(str(cfg), {}, "p")
