r"""`ruler_agents.py` with two changes to the agents (beyond the paper):

  * use_key_contrast: each key is also compared with the mean unit key of
    the cache (its contrast vector and cosine; kvp_jax.policy.key_contrast),
    so an agent can tell a distinctive token (a needle in a repetitive
    haystack) from a common one. Still keys, values and positions only.
  * max_position 2048: positions and ages past the longest training trace
    share the last trained row of the embeddings, instead of untrained rows
    (the held-out suite goes to 4k; the traces stop near 2k).

Same traces as ruler_agents.py (point traces.store at them), same training
schedule, same held-out evaluation:

  python -m kvp_jax.train --config=experiments/ruler_agents_contrast.py \
      --workdir=runs/ruler_contrast --config.traces.store=runs/ruler/traces
  python -m kvp_jax.export --workdir=runs/ruler_contrast
  python -m kvp_jax.evaluate --config=experiments/ruler_agents_contrast.py \
      --workdir=runs/ruler_contrast

Results: experiments/results/ruler_agents_contrast/README.md and the held-out
grid (experiments/results/heldout/README.md, "kvp_contrast").
"""

from experiments import ruler_agents


def get_config():
  c = ruler_agents.get_config()
  c.policy.update(use_key_contrast=True, max_position=2048)
  return c
