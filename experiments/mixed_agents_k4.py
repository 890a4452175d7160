r"""The agents of mixed_agents.py (both sources in one store) trained with
K = 4 rankings per trace in the leave-one-out baseline (train.num_samples=4,
the samples_k4 point of launch/method_ablations.py) instead of K = 1 across
the batch.

With K = 1 the baseline is the mean over a batch that mixes RULER-style
traces and dialogues, whose sampled rankings' costs differ more between
traces than within one (trace diagnostics: 73-99% of the variance per
head), so each advantage carries the gap between the two sources as noise;
K = 4 gives each trace its own baseline. On the RULER-style traces alone
K = 4 lowered the validation cost from 1.580 to 1.225 on every head
(experiments/results/ablations/README.md).

The store is mixed_agents.py's (the same traces, nothing re-recorded):

  python -m kvp_jax.train --config=experiments/mixed_agents_k4.py \
      --workdir=runs/mixed_k4 --config.traces.store=runs/mixed/traces
  python -m kvp_jax.export --workdir=runs/mixed_k4
  python -m kvp_jax.evaluate --workdir=runs/heldout \
      --config=experiments/heldout_cross.py:mixed_k4=runs/mixed_k4/policy.kvp

(the held-out grid adds it as "kvp_mixed_k4").
"""

from experiments import mixed_agents


def get_config():
  c = mixed_agents.get_config()
  c.train.num_samples = 4
  return c
