r"""The held-out grid of experiments/heldout.py with the trained ablation
policies of launch/method_ablations.py added as "kvp_<point name>": every
baseline cell and both committed policies' cells are reused from the same
per-sample log, so only the new policies' cells run.

  python -m launch.sweep --sweep=launch/method_ablations.py \
      --root=runs/sweeps/method --stages=traces,train,export
  python -m kvp_jax.evaluate --config=experiments/heldout_ablations.py \
      --workdir=runs/heldout

A point's policy is read from experiments/results/ablations/<name>/policy.kvp
when committed there, else from <root>/<name>/policy.kvp (root: the
environment's KVP_ABLATION_ROOT, default runs/sweeps/method). Points not
trained yet are left out.
"""

import os
from pathlib import Path

from experiments import heldout
from launch import method_ablations

COMMITTED = Path(heldout.RESULTS) / "ablations"


def ablation_policies(root: str | os.PathLike[str]) -> dict[str, str]:
  """{"kvp_<name>": artifact path} of the ablation points trained so far."""
  found = {}
  for point in method_ablations.points():
    name = point["name"]
    for path in (COMMITTED / name / "policy.kvp",
                 Path(root) / name / "policy.kvp"):
      if path.is_file():
        found[f"kvp_{name}"] = str(path)
        break
  return found


def get_config():
  c = heldout.get_config()
  root = os.environ.get("KVP_ABLATION_ROOT", "runs/sweeps/method")
  c.eval.policies = {**dict(c.eval.policies), **ablation_policies(root)}
  return c
