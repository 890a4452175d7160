r"""The zero-shot cross-evaluation of issue #12 in the held-out grid: the
dialogue-trained agents of dialogue_agents.py join the grid of
heldout_ablations.py (the RULER-trained "kvp" and "kvp_paper" and every
trained ablation point) as "kvp_dialogue", so the RULER-trained agents on
dialogues and the dialogue-trained agents on RULER-style tasks are compared
on the same samples with paired intervals, every baseline cell reused.

  python -m data_pipelines.generate_traces \
      --config=experiments/dialogue_agents.py --workdir=runs/dialogues
  python -m kvp_jax.train --config=experiments/dialogue_agents.py \
      --workdir=runs/dialogues
  python -m kvp_jax.export --workdir=runs/dialogues
  python -m kvp_jax.evaluate --config=experiments/heldout_cross.py \
      --workdir=runs/heldout

The policy is the committed experiments/results/dialogue_agents/policy.kvp
when there is one, else runs/dialogues/policy.kvp (the environment's
KVP_DIALOGUE_POLICY overrides both); without either, evaluate refuses
before the model loads, naming the missing file (the config itself always
builds).

The agents trained on both sources join once trained, the committed
policy first: mixed_agents.py as "kvp_mixed"
(experiments/results/mixed_agents/policy.kvp, else runs/mixed/policy.kvp)
and mixed_agents_k4.py as "kvp_mixed_k4" (experiments/results/
mixed_agents_k4/policy.kvp, else runs/mixed_k4/policy.kvp).
"""

import os
from pathlib import Path

from experiments import heldout
from experiments import heldout_ablations

COMMITTED = Path(heldout.RESULTS) / "dialogue_agents" / "policy.kvp"
TRAINED = Path("runs/dialogues/policy.kvp")
MIXED = {
    "kvp_mixed": (Path(heldout.RESULTS) / "mixed_agents" / "policy.kvp",
                  Path("runs/mixed/policy.kvp")),
    "kvp_mixed_k4": (Path(heldout.RESULTS) / "mixed_agents_k4" / "policy.kvp",
                     Path("runs/mixed_k4/policy.kvp")),
}


def dialogue_policy() -> Path:
  """The dialogue-trained policy this grid evaluates (the first that
  exists; else the first looked for)."""
  named = os.environ.get("KVP_DIALOGUE_POLICY")
  candidates = [Path(named)] if named else [COMMITTED, TRAINED]
  for path in candidates:
    if path.is_file():
      return path
  return candidates[0]          # Missing: evaluate's config check says so.


def get_config():
  c = heldout_ablations.get_config()
  c.eval.policies = {**dict(c.eval.policies),
                     "kvp_dialogue": str(dialogue_policy())}
  for label, candidates in MIXED.items():
    trained = [p for p in candidates if p.is_file()]
    if trained:
      c.eval.policies[label] = str(trained[0])
  return c
