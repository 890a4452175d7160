r"""The zero-shot cross-evaluation in the held-out (dev) grid: the
dialogue-trained agents of dialogue_agents.py ("kvp_dialogue") and the
agents trained on both sources (mixed_agents.py, "kvp_mixed") join the grid
of heldout_ablations.py, so the RULER-trained agents on dialogues and the
dialogue-trained agents on RULER-style tasks are compared on the same
samples with paired intervals, every baseline cell reused.

  python -m kvp_jax.evaluate --config=experiments/heldout_cross.py \
      --workdir=runs/heldout

Config arguments (after the file's ":", comma-separated; those of
heldout_ablations.py too):
  dialogue=PATH  another dialogue-trained policy instead of the committed one
                 (e.g. runs/dialogues/policy.kvp)
  mixed_k4=PATH  the K = 4 agents of mixed_agents_k4.py, once trained, as
                 "kvp_mixed_k4"
"""

from experiments import heldout_ablations
from experiments import policies
from kvp_jax import configs


def get_config(arg=None):
  args = configs.parse_config_arg(arg, dialogue="", mixed_k4="", points=[],
                                  suites=[], trained=[],
                                  root="runs/sweeps/method")
  rest = ",".join(f"{k}={','.join(args[k])}" for k in ("points", "suites",
                                                        "trained")
                  if args[k]) + f",root={args['root']}"
  c = heldout_ablations.get_config(rest)
  extra = {"kvp_dialogue": args["dialogue"] or
                           policies.pinned("dialogue_agents"),
           "kvp_mixed": policies.pinned("mixed_agents")}
  if args["mixed_k4"]:
    extra["kvp_mixed_k4"] = args["mixed_k4"]
  c.eval.policies = {**dict(c.eval.policies), **extra}
  return c
