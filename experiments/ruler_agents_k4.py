r"""The project's default agents for Gemma 3 270M, the policy shipped inside
the package (kvp_jax/policy/shipped/): ruler_agents_contrast.py trained
with the project's default K = 4 rankings per trace in the leave-one-out
baseline (the value of common.DEFAULT_NUM_SAMPLES; fixed here, since this
file reproduces the shipped artifact) instead of K = 1 across the batch.
It is the samples_k4 point of launch/method_ablations.py (same traces,
schedule and seed as "kvp_contrast"), whose results are under
experiments/results/ablations/samples_k4/; "kvp" in the held-out grid.

  python -m kvp_jax.train --config=experiments/ruler_agents_k4.py \
      --workdir=runs/ruler_k4 --config.traces.store=runs/ruler/traces
  python -m kvp_jax.export --workdir=runs/ruler_k4

Results: experiments/results/ablations/README.md and experiments/results/heldout/README.md ("kvp").
"""

from experiments import ruler_agents_contrast


def get_config():
  c = ruler_agents_contrast.get_config()
  c.train.num_samples = 4
  return c
