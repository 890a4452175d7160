"""The typed eval section: unknown and ill-typed fields are named."""

import pytest

from experiments import common
from kvp_jax import evaluation


def _config(**eval_overrides):
  c = common.base_config()
  c.eval = common.eval_config(
      suites=[common.ruler_suite(("vt",), lengths=(1024,), num_samples=1)],
      **eval_overrides)
  return c


def test_defaults_come_from_the_dataclass():
  ec = evaluation.EvalConfig.from_config(_config())
  assert ec == evaluation.EvalConfig(suites=ec.suites)
  assert ec.budgets == (64, 128, 256, 512, 1024)
  assert ec.suite_dicts()[0]["kind"] == "ruler"


@pytest.mark.parametrize("field,value,message", [
    ("nosuch", 1, r"config\.eval\.nosuch: unknown field"),
    ("budgets", [64, "x"], r"config\.eval\.budgets\[1\]: expected int"),
    ("budgets", [0], r"config\.eval\.budgets: 0 is not a positive"),
    ("protocol", "sometimes", r"config\.eval\.protocol: 'sometimes'"),
    ("scorers", ["knorm", "nosuch"], r"unknown scorer 'nosuch'"),
    ("batch_size", 0, r"config\.eval\.batch_size: must be >= 1"),
])
def test_a_bad_field_is_named(field, value, message):
  c = _config()
  c.eval[field] = value
  with pytest.raises(ValueError, match=message):
    evaluation.EvalConfig.from_config(c)


def test_a_bad_suite_field_is_named():
  c = _config()
  c.eval.suites = [{"kind": "ruler", "nosuch": 1}]
  with pytest.raises(ValueError,
                     match=r"config\.eval\.suites\[0\]\.nosuch: unknown"):
    evaluation.EvalConfig.from_config(c)
  c.eval.suites = [{"kind": "poetry"}]
  with pytest.raises(ValueError, match="unknown suite kind 'poetry'"):
    evaluation.EvalConfig.from_config(c)
