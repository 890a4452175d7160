r"""The held-out grid of experiments/heldout.py with the trained ablation
policies of launch/method_ablations.py added as "kvp_<point name>": every
baseline cell and both committed policies' cells are reused from the same
per-sample log, so only the new policies' cells run.

  python -m launch.sweep --sweep=launch/method_ablations.py \
      --root=runs/sweeps/method --stages=traces,train,export
  python -m kvp_jax.evaluate --config=experiments/heldout_ablations.py \
      --workdir=runs/heldout

Every <name>/policy.kvp under experiments/results/ablations/ (committed
points) and under the sweep's root (the environment's KVP_ABLATION_ROOT,
default runs/sweeps/method) joins as "kvp_<name>", the committed one first
when both exist; points not trained yet are simply not there.

The environment's KVP_EVAL_SUITES (comma-separated suite names, e.g.
"attention_cost,ruler") keeps only those suites: on 2 CPU cores a point's
RULER-style and attention-cost cells take about an hour, its dialogues
another half hour, and the ablation table is read on the RULER-style suite.
The log keeps what ran, so a later run without it adds the other suites'
cells only. KVP_ABLATION_POINTS (comma-separated point names, e.g.
"target_value_weighted") likewise keeps only those points, for a suite
that only some points get (the dialogues: only a point that beats the
default on the RULER-style suite).
"""

import os
from pathlib import Path

from experiments import heldout

COMMITTED = Path(heldout.RESULTS) / "ablations"


def ablation_policies(root: str | os.PathLike[str]) -> dict[str, str]:
  """{"kvp_<name>": artifact path} of the ablation points trained so far."""
  found = {}
  for base in (COMMITTED, Path(root)):
    for path in sorted(base.glob("*/policy.kvp")):
      found.setdefault(f"kvp_{path.parent.name}", str(path))
  return found


def _named(names: str, known: list[str], error: str) -> list[str]:
  """The comma-separated `names`, stripped, each one of `known`; otherwise
  ValueError(`error` formatted with {unknown} and {known})."""
  wanted = [n.strip() for n in names.split(",") if n.strip()]
  unknown = [n for n in wanted if n not in known]
  if unknown:
    raise ValueError(error.format(unknown=unknown,
                                  known=", ".join(known) or "none"))
  return wanted


def chosen_suites(suites, names: str | None) -> list:
  """The suites named in `names` (comma-separated; all when empty/None), in
  their order; an unknown name is an error naming the known ones."""
  if not names:
    return list(suites)
  wanted = _named(names, [s["name"] for s in suites],
                  "KVP_EVAL_SUITES: unknown suites {unknown}; known: {known}")
  return [s for s in suites if s["name"] in wanted]


def chosen_points(policies: dict[str, str], names: str | None
                  ) -> dict[str, str]:
  """The ablation points of `policies` ({"kvp_<name>": path}) named in
  `names` (comma-separated point names; all when empty/None); an unknown or
  untrained name is an error naming the trained ones."""
  if not names:
    return dict(policies)
  trained = [n.removeprefix("kvp_") for n in policies]
  wanted = _named(names, trained, "KVP_ABLATION_POINTS: no trained point "
                  "{unknown}; trained: {known}")
  return {f"kvp_{n}": policies[f"kvp_{n}"] for n in wanted}


def get_config():
  c = heldout.get_config()
  root = os.environ.get("KVP_ABLATION_ROOT", "runs/sweeps/method")
  points = chosen_points(ablation_policies(root),
                         os.environ.get("KVP_ABLATION_POINTS"))
  c.eval.policies = {**dict(c.eval.policies), **points}
  c.eval.suites = chosen_suites(c.eval.suites,
                                os.environ.get("KVP_EVAL_SUITES"))
  return c
