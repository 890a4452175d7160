r"""KVP agents for Gemma 3 270M trained on multi-turn dialogues.

The paper's OASST2 setting, on the offline chitchat dialogues: traces of
2k-token conversations from the training pool of conversations, each with
four random split points (the paper's Algorithm 1: the "prompt" ends at a
random point and the future is what follows), validated against the
query-free baselines. Evaluated on held-out dialogues' perplexity and, for
the zero-shot claim, on RULER-style tasks (launch/cross_eval.py).

  python -m data_pipelines.generate_traces --config=experiments/dialogue_agents.py \
      --workdir=runs/dialogues
  python -m kvp_jax.train --config=experiments/dialogue_agents.py --workdir=runs/dialogues

The project's default agent (key contrast, experiments/common.policy_config)
with the schedule of experiments/ruler_agents_contrast.py; CPU-scale
departures from the paper as in experiments/ruler_agents.py.
"""

from experiments import common
from experiments import ruler_agents_contrast


def get_config():
  c = ruler_agents_contrast.get_config()
  c.traces = common.traces_config(
      sources=[common.dialogue_source(lengths=(2048,), num_samples=160,
                                      seed=1000, pool="train")],
      max_new_tokens=64, num_random_splits=4, min_prompt_length=256,
      batch_size=4, max_length=2048 + 256)
  c.input.update(split_mode="all", eval_split_mode="true")
  return c
