"""train.best_per_agent: each agent's own best validation step is kept
beside the one-step-for-all best checkpoint (the default)."""

import jax
import numpy as np

from kvp_jax import policy as policy_lib
from kvp_jax import training
from kvp_jax.training import _per_agent
from tests.training import synthetic


def test_merge_keeps_each_agents_lower_cost():
  old = {"w": np.zeros((3, 2)), "b": np.zeros(3)}
  new = {"w": np.ones((3, 2)), "b": np.ones(3)}
  params, costs, improved = _per_agent.merge_best(
      old, [1.0, 2.0, 3.0], new, [1.5, 1.0, 3.0])
  assert improved.tolist() == [False, True, False]   # A tie keeps the old.
  assert costs.tolist() == [1.0, 1.0, 3.0]
  np.testing.assert_array_equal(params["w"][:, 0], [0, 1, 0])
  np.testing.assert_array_equal(params["b"], [0, 1, 0])
  params, costs, improved = _per_agent.merge_best(None, None, new, [5, 5, 5])
  assert improved.all() and params["b"].tolist() == [1, 1, 1]


def _slice(params, a):
  return [np.asarray(x)[a] for x in jax.tree_util.tree_leaves(params)]


def test_per_agent_best_params_come_from_each_agents_best_step(tmp_path):
  synthetic.make_store(tmp_path / "traces", num_traces=16)
  cfg = synthetic.tiny_config(tmp_path / "traces", steps=4, eval_every=2,
                              checkpoint_every=2, best_per_agent=True)
  summary = training.train_and_evaluate(cfg, tmp_path / "run",
                                        progress=False)
  record = summary["best_per_agent"]
  assert len(record["step"]) == 2 and set(record["step"]) <= {2, 4}
  per_agent, _ = training.restore_params(tmp_path / "run",
                                         which="best_per_agent")
  kept = {4: training.restore_params(tmp_path / "run", which="latest")[0]}
  best, best_step = training.restore_params(tmp_path / "run", which="best")
  kept[best_step] = best
  checked = [a for a, step in enumerate(record["step"]) if step in kept]
  assert checked           # An agent's best is at the best (or last) step.
  for a in checked:
    for x, y in zip(_slice(per_agent, a), _slice(kept[record["step"][a]], a)):
      np.testing.assert_array_equal(x, y)
  art = policy_lib.load_artifact(training.export_policy(
      tmp_path / "run", tmp_path / "p.kvp", which="best_per_agent"))
  assert art.info["agent_steps"] == record["step"]
  assert art.info["checkpoint"] == "best_per_agent"
