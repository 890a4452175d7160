r"""KVP agents for Gemma 3 270M trained on RULER-style tasks.

The paper's main setting, scaled to run on a CPU: traces of all 11
RULER-style tasks at 1k and 2k tokens (greedy continuations of 64 tokens),
18 agents (one per layer; Gemma 3 270M has one KV head), validated every 100
steps against random, StreamingLLM, K-norm and KeyDiff.

  python -m data_pipelines.generate_traces --config=experiments/ruler_agents.py \
      --workdir=runs/ruler
  python -m kvp_jax.train --config=experiments/ruler_agents.py --workdir=runs/ruler
  python -m kvp_jax.export --workdir=runs/ruler
  python -m kvp_jax.evaluate --config=experiments/ruler_agents.py --workdir=runs/ruler

Departures from the paper's settings, and why:
  * agents of width 64 (paper: 256) in float32 (paper: bf16, which is slower
    than float32 on a CPU), batch 16 (paper: 128), 800 steps at lr 1e-3
    (paper: 4,000 at 5e-5): a CPU budget (~4 s a step on 2 cores). On an
    accelerator: --config.policy.hidden=256 --config.policy.feature_width=256
    --config.policy.dtype=bfloat16 --config.input.batch_size=128
    --config.train.steps=4000 --config.train.learning_rate=5e-5.
  * position_mode "both": the agent sees the token's age (distance from the
    end of the cache at eviction time) beside its absolute position. 15 of
    Gemma 3's 18 layers attend within a 512-token window, so a token's
    future attention there depends on its age, which absolute positions
    alone do not tell (the paper's models have no windowed layers).
Results: experiments/README.md.
"""

from experiments import common
from experiments import ruler_full_cache


def get_config():
  c = common.base_config()
  c.traces = common.traces_config(
      sources=[common.ruler_source(lengths=(1024, 2048), num_samples=10,
                                   seed=1000)],
      max_new_tokens=64, batch_size=4, max_length=2048 + 256)
  c.policy.update(hidden=64, feature_width=64, position_mode="both",
                  dtype="float32")
  c.input.update(batch_size=16, buckets=(1024, 2048))
  c.train.update(steps=800, learning_rate=1e-3, warmup_steps=50,
                 ema_start=50, eval_every=100, checkpoint_every=100)
  # Held-out evaluation (seeds and conversations the traces did not use):
  # RULER-style tasks at 2k and 4k, dialogue perplexity at 2k, and each
  # scorer's normalised future-attention cost per head, for KVP and the
  # query-free baselines at budgets 64..1024. Sample counts fit a 2-core CPU
  # (about 40 minutes); on an accelerator raise num_samples and add the
  # query-aware scorers (--config.eval.scorers=...,snapkv,tova,h2o,oracle).
  # Metrics (common.EVAL_METRICS): accuracy, answer retention and
  # teacher-forced fidelity to the full cache (one forward pass per cell),
  # perplexity, the normalised cost and the evicted share at 64..512; the
  # paired verdicts against the best baseline of each family are in
  # eval/verdicts.jsonl and the end of eval/results.md.
  c.eval = common.eval_config(
      suites=[
          common.ruler_suite(lengths=(2048, 4096), num_samples=2, seed=2000,
                             max_new_tokens=ruler_full_cache.MAX_NEW_TOKENS),
          common.dialogue_suite(lengths=(2048,), num_samples=4, seed=2000),
          {"kind": "attention_cost", "name": "attention_cost",
           "max_new_tokens": 64, "sources": [common.ruler_source(
               lengths=(2048,), num_samples=1, seed=2001)]},
      ],
      scorers=["kvp", "random", "streaming_llm", "knorm", "keydiff",
               "lagkv"])
  return c
