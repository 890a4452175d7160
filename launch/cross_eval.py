"""The paper's zero-shot claim: an agent trained on RULER-style tasks and one
trained on dialogues, each evaluated on both (both configs' eval sections
hold the RULER-style suite and the held-out dialogue suite). Both are the
project's default agent (key contrast); the RULER-trained one is the agent
committed as experiments/results/ruler_agents_contrast/policy.kvp.

  python -m launch.sweep --sweep=launch/cross_eval.py --root=runs/sweeps/cross
"""


def get_sweep():
  return [{"config": "experiments/ruler_agents_contrast.py",
           "name": "trained_on_ruler"},
          {"config": "experiments/dialogue_agents.py",
           "name": "trained_on_dialogues"}]
