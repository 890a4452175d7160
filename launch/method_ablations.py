r"""The ablations of what KVP's agents are trained to predict and how, on the
RULER-style traces of experiments/ruler_agents.py with its schedule; each
point trains and exports, and the held-out grid evaluates them all on the
same samples (experiments/heldout_ablations.py, paired intervals against
every baseline, the shipped default "kvp" and "kvp_contrast").

  python -m launch.sweep --sweep=launch/method_ablations.py \
      --root=runs/sweeps/method --stages=traces,train,export
  python -m kvp_jax.evaluate --workdir=runs/heldout \
      --config=experiments/heldout_ablations.py:trained=NAME,suites=ruler

One family at a time: --sweep=launch/method_ablations.py:families=reward
(or futures, samples, position, target, comma-separated; default: every
family). Every point but "futures_reference" and "target_value_weighted"
shares one trace store (their traces settings are the same); those two
record their own.

Families (issue #12, item 1), each one change to its base (below):
  reward:   the budgets the reward sums over: every budget (the paper),
            only b <= 512 ("truncated"), every halving of the budget equally
            (w_b = 1 / (b + 1), "harmonic"); kvp_jax.objective.BudgetWeighting.
  futures:  the model's greedy continuation (the paper) vs the reference
            answer teacher-forced (traces.continuation = "reference").
  samples:  K = 1 ranking per trace, grouped across the batch, vs K = 4 per
            trace in the leave-one-out baseline (train.num_samples).
  position: absolute + age (the base), absolute only, age only, none.
  target:   the paper's future attention mass vs each query head's attention
            weighted by ||W_O^g v_j||, the size of what the token writes
            through that head (traces.target = "value_weighted", its own
            trace store).
  seeds:    the default with train.seed 43 and 44 beside the shipped 42:
            no ablation, the seed spread the test reports.
Two bases. The samples family changes experiments/ruler_agents_contrast.py
as committed (key contrast, position "both", uniform reward, greedy
futures, K = 1), which is "kvp_contrast" of the held-out grid, so it is not trained
again here. Its point samples_k4 won (experiments/results/ablations/README.md): K = 4 is the project's default since, and its policy is the
shipped one (experiments/ruler_agents_k4.py, "kvp" in the grid). Every other family therefore changes that default: its points carry
DEFAULT_OVERRIDES (K = 4) beside their own change, so each point's paired
verdicts against "kvp" (the shipped default) are its ablation result: does the change improve
the shipped policy. The config file stays ruler_agents_contrast.py, so
every point shares the trace store of samples_k4 (the store's key is the
config file and its traces.* overrides).
Key contrast off (item 1e) needs no run either: it is "kvp_paper"
(experiments/ruler_agents.py: same traces and schedule; its max_position
differs, which the position clamp makes irrelevant: no row past the longest
training trace is read).
"""

from kvp_jax import configs

BASE = "experiments/ruler_agents_contrast.py"
# BASE + these = the project's default (experiments/ruler_agents_k4.py).
DEFAULT_OVERRIDES = {"train.num_samples": 4}
# The families that change BASE itself; the rest change the default.
ON_BASE = ("samples",)

FAMILIES = {
    "reward": [
        {"name": "reward_truncated512", "train.reward_budgets": "truncated",
         "train.reward_max_budget": 512},
        {"name": "reward_harmonic", "train.reward_budgets": "harmonic"}],
    "futures": [
        {"name": "futures_reference", "traces.continuation": "reference"}],
    "samples": [{"name": "samples_k4", "train.num_samples": 4}],
    "position": [
        {"name": "position_absolute", "policy.position_mode": "absolute"},
        {"name": "position_age", "policy.position_mode": "relative"},
        {"name": "position_none", "policy.use_position": False}],
    # Position features that mean the same at every context length (for
    # contexts past the trained one; kvp_jax.policy.depth_bucket,
    # log_age_bucket).
    "length_free": [
        {"name": "position_depth", "policy.position_mode": "depth"},
        {"name": "position_depth_log_age",
         "policy.position_mode": "depth_log_age"}],
    "target": [
        {"name": "target_value_weighted", "traces.target": "value_weighted"}],
    # The default itself with other initialisation and sampling seeds (the
    # shipped policy is seed 42): the spread over seeds beside the
    # interval over samples (experiments/test.py:seeds=...).
    "seeds": [{"name": f"seed{s}", "train.seed": s} for s in (43, 44)],
}


def points(families=None) -> list[dict]:
  """The points of the named families (all when None): each family's
  points on BASE (ON_BASE) or on the default (BASE + DEFAULT_OVERRIDES)."""
  names = list(FAMILIES) if families is None else list(families)
  unknown = [n for n in names if n not in FAMILIES]
  if unknown:
    raise ValueError(f"unknown ablation families {unknown}; known: "
                     f"{', '.join(FAMILIES)}")
  return [{"config": BASE, **({} if n in ON_BASE else DEFAULT_OVERRIDES), **p}
          for n in names for p in FAMILIES[n]]


def get_sweep(arg=None):
  """The points; the sweep file's argument `families=a,b` keeps those
  families' (kvp_jax.configs.parse_config_arg)."""
  families = configs.parse_config_arg(arg, families=[])["families"]
  return points(families or None)
