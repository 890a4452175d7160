"""Typed config sections (kvp_jax.configs) and the train section's type."""

import dataclasses
from typing import Optional

import ml_collections
import pytest

from experiments import common
from kvp_jax import configs
from kvp_jax import training


@dataclasses.dataclass(frozen=True)
class Section:
  steps: int = 3
  rate: float = 0.5
  name: str = "a"
  flag: bool = False
  limit: Optional[int] = None
  sizes: tuple[int, ...] = (1, 2)


def test_round_trip_and_defaults():
  got = configs.from_config_dict(Section, {"s": {"steps": 7, "rate": 2}},
                                 section="s")
  assert got == Section(steps=7, rate=2.0, limit=None)
  assert isinstance(got.rate, float)
  back = configs.to_config_dict(Section(limit=4, sizes=(3,)))
  assert configs.from_config_dict(Section, back) == Section(limit=4,
                                                            sizes=(3,))


def test_optional_field_can_be_overridden_from_none():
  c = ml_collections.ConfigDict({"s": configs.to_config_dict(Section())})
  assert c.s.limit is None
  c.s.limit = 5                       # What --config.s.limit=5 does.
  assert configs.from_config_dict(Section, c, "s").limit == 5
  with pytest.raises(TypeError):
    c.s.limit = "five"


@pytest.mark.parametrize("field,value,message", [
    ("nosuch", 1, r"config\.s\.nosuch: unknown field; known: flag, limit, "
                  r"name, rate, sizes, steps"),
    ("steps", "3", r"config\.s\.steps: expected int, got str '3'"),
    ("steps", True, r"config\.s\.steps: expected int, got bool"),
    ("steps", 2.5, r"config\.s\.steps: expected int, got float"),
    ("flag", 1, r"config\.s\.flag: expected bool, got int"),
    ("limit", "x", r"config\.s\.limit: expected int, got str"),
    ("sizes", (1, "b"), r"config\.s\.sizes\[1\]: expected int"),
])
def test_bad_fields_name_themselves(field, value, message):
  with pytest.raises(ValueError, match=message):
    configs.from_config_dict(Section, {"s": {field: value}}, section="s")


def test_missing_section():
  with pytest.raises(ValueError, match=r"config\.s: missing section"):
    configs.from_config_dict(Section, {}, section="s")


def test_train_config_matches_the_experiments_defaults():
  section = common.train_config()
  tc = training.TrainConfig.from_config({"train": section})
  for key, value in section.items():
    assert getattr(tc, key) == value, key
  assert tc.last_step == tc.steps
  assert dataclasses.replace(tc, stop_after=10).last_step == 10
  with pytest.raises(ValueError, match=r"config\.train\.eval_every: must be "
                                       r">= 1"):
    dataclasses.replace(tc, eval_every=0)


def test_train_refuses_a_bad_train_field_before_writing(tmp_path):
  config = common.base_config()
  config.train.nosuch = 1
  with pytest.raises(ValueError, match=r"config\.train\.nosuch: unknown "
                                       r"field; known: .*adam_eps"):
    training.train_and_evaluate(config, tmp_path / "run", progress=False)
  assert not (tmp_path / "run").exists()
