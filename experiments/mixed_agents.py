r"""KVP agents for Gemma 3 270M trained on both sources at once: the
RULER-style traces of ruler_agents.py (each at its true split) and the
chitchat dialogues of dialogue_agents.py (each at its true split and four
random ones), in one trace store, with the project's default agent and the
schedule of ruler_agents_contrast.py.

Neither single-source agent meets issue #12's bar on both suites: the
RULER-trained one is behind H2O and level with the heuristics on
dialogues, the dialogue-trained one gives up RULER-style retention
(experiments/results/heldout/README.md). This one sees both distributions. A batch mixes them in
proportion to their training elements (about 180 RULER-style traces and
128 dialogues x 5 split points), as the input pipeline's buckets do.

  python -m data_pipelines.generate_traces --config=experiments/mixed_agents.py \
      --workdir=runs/mixed \
      --config.traces.reuse="('runs/ruler/traces','runs/dialogues/traces')"
  python -m kvp_jax.train --config=experiments/mixed_agents.py --workdir=runs/mixed
  python -m kvp_jax.export --workdir=runs/mixed
  python -m kvp_jax.evaluate --config=experiments/heldout_cross.py \
      --workdir=runs/heldout

traces.reuse copies the traces the two single-source stores already hold
(recorded the same way: checked) instead of recording them again; without
it, the job records all of them. The held-out grid (heldout_cross.py) holds
its committed policy as "kvp_mixed" (pinned in experiments/policies.py).
"""

from experiments import dialogue_agents
from experiments import ruler_agents_contrast


def get_config():
  c = ruler_agents_contrast.get_config()
  dialogues = dialogue_agents.get_config().traces
  c.traces.sources = list(c.traces.sources) + [
      {**dict(source), "num_random_splits": dialogues.num_random_splits,
       "min_prompt_length": dialogues.min_prompt_length}
      for source in dialogues.sources]
  c.input.update(split_mode="all", eval_split_mode="true")
  return c
