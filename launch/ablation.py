"""Ablation of KVP on RULER-style traces: samples per trace K (the released
trainer's K=1 across the batch vs the paper's Algorithm 1 with K=4) and the
agent's input features (keys only, values only, no position).

  python -m launch.sweep --sweep=launch/ablation.py --root=runs/sweeps/ablation

All points share one trace store (their traces settings are the same).
"""

BASE = "experiments/ruler_agents.py"


def get_sweep():
  points = [{"config": BASE, "name": "base"},
            {"config": BASE, "name": "k4", "train.num_samples": 4}]
  for name, overrides in (
      ("keys_only", {"policy.use_values": False, "policy.use_position": False}),
      ("values_only", {"policy.use_keys": False, "policy.use_position": False}),
      ("no_position", {"policy.use_position": False})):
    points.append({"config": BASE, "name": name, **overrides})
  return points
