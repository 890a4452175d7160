r"""A tiny end-to-end run on a random 3-layer decoder with Gemma's vocabulary:
the whole pipeline in about a minute on a CPU (tests, smoke checks).

  python -m kvp_jax.pipeline --config=experiments/tiny.py --workdir=/tmp/tiny
"""

from experiments import common


def get_config():
  c = common.base_config()
  c.model = common.model_config("tiny_gemma_vocab", source="random")
  c.traces = common.traces_config(
      sources=[common.ruler_source(("niah_single_1",), lengths=(384,),
                                   num_samples=8, seed=1000)],
      max_new_tokens=8, batch_size=4, pad_multiple=128, max_length=512,
      split_fractions=(0.75, 0.25, 0.0))
  c.policy.update(hidden=16, feature_width=16, position_dim=8,
                  max_position=512, dtype="float32", position_mode="both")
  c.input.update(batch_size=4, buckets=(512,))
  c.train.update(steps=10, learning_rate=3e-3, warmup_steps=2, ema_start=2,
                 eval_every=5, checkpoint_every=5)
  c.eval = common.eval_config(
      suites=[common.ruler_suite(("niah_single_1",), lengths=(384,),
                                 num_samples=2, seed=2000,
                                 max_new_tokens=8)],
      scorers=["kvp", "knorm"], budgets=[32, 64], batch_size=2)
  return c
