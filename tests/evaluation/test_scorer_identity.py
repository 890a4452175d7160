"""A scorer's own settings in its cells' identity: RoCo as EasyKV builds it
gets new cells, its earlier settings keep the committed ones, every other
scorer's identity is what it was."""

import hashlib
import json

import pytest

from kvp_jax import cache as cache_lib
from kvp_jax import evaluation
from kvp_jax import scorers
from kvp_jax.evaluation._grid import Grid


def _grid(**options):
  return Grid(
      scorers={"knorm": scorers.get_scorer("knorm"),
               "roco": scorers.get_scorer("roco", **options)},
      budgets=(64,), protected=cache_lib.Protected(), protocol="once",
      allocation="uniform", chunk_size=512, decode_interval=32,
      batch_size=8, include_full=True, seed=0, identity={"model": "m"})


def _earlier_settings(scorer):
  """The identity as it was computed before scorers declared settings."""
  text = json.dumps(["m", None, [512, 32, 0]])
  del scorer
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def test_roco_declares_what_differs_from_its_earlier_settings():
  roco = scorers.get_scorer("roco")
  assert (roco.recent_ratio, roco.decode_recent_ratio) == (0.1, 0.3)
  assert roco.accumulate_chunks
  assert roco.identity() == {"recent_ratio": 0.1, "accumulate_chunks": True}
  assert roco.for_decoding().recent_ratio == 0.3
  assert scorers.get_scorer("roco", recent_ratio=0.3,
                            accumulate_chunks=False).identity() == {}
  assert scorers.get_scorer("knorm").identity() == {}


def test_only_changed_settings_change_a_cells_identity():
  new, pinned = _grid(), _grid(recent_ratio=0.3, accumulate_chunks=False)
  assert pinned.settings("roco") == _earlier_settings("roco")
  assert new.settings("roco") != pinned.settings("roco")
  assert new.settings("knorm") == pinned.settings("knorm") == (
      _earlier_settings("knorm"))
  row = {"scorer": "roco", "protocol": "once", "allocation": "uniform",
         "settings": pinned.settings("roco")}
  assert pinned.is_current(row) and not new.is_current(row)


def test_scorer_options_are_checked():
  with pytest.raises(ValueError, match="scorer_options.tova: 'tova' is not"):
    evaluation.EvalConfig(scorers=("roco",),
                          scorer_options={"tova": {"window": 8}})
  with pytest.raises(ValueError, match="scorer_options.roco: .*recent_rati"):
    evaluation.EvalConfig(scorers=("roco",),
                          scorer_options={"roco": {"recent_ratio": 2.0}})
  with pytest.raises(ValueError, match="scorer_options.roco: .*unexpected"):
    evaluation.EvalConfig(scorers=("roco",),
                          scorer_options={"roco": {"stride": 8}})
  ec = evaluation.EvalConfig(scorers=("roco",),
                             scorer_options={"roco": {"recent_ratio": 0.3}})
  assert ec.scorer_options == {"roco": {"recent_ratio": 0.3}}


def test_any_option_changes_the_identity_of_its_scorer_only():
  lag = scorers.get_scorer("lagkv", lag=64)
  assert lag.identity() == {"lag": 64}
  assert scorers.get_scorer("lagkv").identity() == {}
  assert scorers.get_scorer("roco", num_sinks=8).identity() == {
      "recent_ratio": 0.1, "accumulate_chunks": True, "num_sinks": 8}
  grid = _grid()
  grid.scorers["lagkv"] = scorers.get_scorer("lagkv")
  before = grid.settings("lagkv")
  grid.scorers["lagkv"] = lag
  assert grid.settings("lagkv") != before
  assert before == _earlier_settings("lagkv")


def test_a_policys_identity_is_its_file_not_its_fields():
  from kvp_jax.policy import shipped_policy
  kvp = scorers.KVPScorer.from_artifact(shipped_policy("gemma3_270m").path)
  assert kvp.fingerprint and kvp.identity() == {}
