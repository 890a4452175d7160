r"""The held-out (dev) grid of experiments/heldout.py with the method
ablation points of launch/method_ablations.py added as "kvp_<point name>":
every baseline cell and the committed policies' cells are reused from the
same per-sample log, so only the new policies' cells run.

  python -m kvp_jax.evaluate --config=experiments/heldout_ablations.py \
      --workdir=runs/heldout
  python -m kvp_jax.evaluate \
      --config=experiments/heldout_ablations.py:points=position_age,suites=ruler \
      --workdir=runs/heldout

Config arguments (after the file's ":", comma-separated):
  points=a,b     only these committed points (default: every one of
                 experiments/policies.py; samples_k4 is the shipped "kvp")
  suites=a,b     only these suites (e.g. attention_cost,ruler: on 2 CPU
                 cores a point's RULER-style and attention-cost cells take
                 about an hour, its dialogues another half hour)
  trained=a,b    points trained by the sweep but not committed yet: their
                 policies are read from <root>/<name>/policy.kvp
  root=DIR       the sweep's root (default runs/sweeps/method)
The log keeps what ran, so a later run without `suites` adds the other
suites' cells only.
"""

from experiments import heldout
from experiments import policies
from kvp_jax import configs

PREFIX = "ablations/"
# samples_k4 is the shipped policy: "kvp" of the grid.
SHIPPED_POINT = "samples_k4"


def committed_points() -> list[str]:
  """The committed ablation points, by name."""
  return [e.removeprefix(PREFIX) for e in policies.SHA256
          if e.startswith(PREFIX) and e != PREFIX + SHIPPED_POINT]


def _chosen(names, known, what):
  unknown = [n for n in names if n not in known]
  if unknown:
    raise ValueError(f"{what}: unknown {unknown}; known: "
                     f"{', '.join(known) or 'none'}")
  return [n for n in known if n in names]


def get_config(arg=None):
  args = configs.parse_config_arg(arg, points=[], suites=[], trained=[],
                                  root="runs/sweeps/method")
  c = heldout.get_config()
  points = _chosen(args["points"] or committed_points(), committed_points(),
                   "points")
  extra = {f"kvp_{p}": policies.pinned(PREFIX + p) for p in points}
  extra.update({f"kvp_{p}": f"{args['root']}/{p}/policy.kvp"
                for p in args["trained"]})
  c.eval.policies = {**dict(c.eval.policies), **extra}
  if args["suites"]:
    names = [s["name"] for s in c.eval.suites]
    keep = _chosen(args["suites"], names, "suites")
    c.eval.suites = [s for s in c.eval.suites if s["name"] in keep]
  return c
