"""Every experiment config builds, its train and eval sections pass their
typed checks, and its eval settings make a valid Eviction."""

import importlib
from pathlib import Path

import pytest

from kvp_jax import evaluation
from kvp_jax import eviction as eviction_lib
from kvp_jax import scorers
from kvp_jax import training
from kvp_jax.evaluation import _suites

CONFIGS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] /
                                  "experiments").glob("*.py")
                 if p.stem not in ("__init__", "common", "policies"))


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds(name):
  config = importlib.import_module(f"experiments.{name}").get_config()
  for section in ("model", "traces", "policy", "input", "train", "eval"):
    assert section in config, (name, section)
  known = set(scorers.available_scorers())
  assert set(config.eval.scorers) <= known, set(config.eval.scorers) - known
  training.TrainConfig.from_config(config)
  evaluation.EvalConfig.from_config(config)
  eviction_lib.Eviction(budget=min(config.eval.budgets or [64]),
                        protocol=config.eval.protocol,
                        allocation=config.eval.allocation,
                        chunk_size=config.eval.chunk_size,
                        decode_interval=config.eval.decode_interval)
  for suite in config.eval.suites:
    assert suite["kind"] in _suites.kinds(), suite
