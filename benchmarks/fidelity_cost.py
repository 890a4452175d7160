r"""What one (sample, scorer, budget) cell costs: teacher-forced fidelity
against generation-based accuracy.

  python benchmarks/fidelity_cost.py                 # Gemma 3 270M, 2k
  python benchmarks/fidelity_cost.py --model=tiny_gemma_vocab --source=random \
      --length=256 --max_new_tokens=8 --budget=32 --repeats=1   # smoke test

Both start from one shared full prefill of --num_samples RULER-style prompts
at --length tokens, with the attention capture a query-aware --scorer reads
(its time is reported, not charged to either):

  generation  eviction.generate_compressed from the Context: compress to
              --budget with --scorer, then greedy decoding of
              --max_new_tokens tokens (eos_id=-1: every row decodes them all),
              what the accuracy cell runs.
  fidelity    eviction.continuation_logits from the Context on the full
              cache's answer (--max_new_tokens tokens): compress, then ONE
              forward pass over the answer, then _fidelity.fidelity_metrics
              against the full cache's logits (computed once per batch,
              reported separately), what the fidelity cell runs.

Medians of --repeats runs after a warm-up (compilation). Target: the
fidelity cell >= 4x cheaper than the generation cell.
"""

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

import _timing
from experiments import common
from kvp_jax import eviction as eviction_lib
from kvp_jax import model as model_lib
from kvp_jax import scorers as scorers_lib
from kvp_jax.evaluation import _fidelity
from kvp_jax.samples import sources as sources_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("model", common.GEMMA, "model preset")
flags.DEFINE_string("source", "gguf", "gguf (the shipped weights) or random")
flags.DEFINE_integer("length", 2048, "RULER-style prompt length (tokens)")
flags.DEFINE_integer("num_samples", 2, "prompts in the batch")
flags.DEFINE_integer("max_new_tokens", 32, "answer tokens")
flags.DEFINE_integer("budget", 128, "tokens kept per (layer, KV head)")
flags.DEFINE_string("scorer", "knorm", "scorer of the cell")
flags.DEFINE_integer("repeats", 3, "timed runs per part")
flags.DEFINE_string("out", None, "also write the JSON lines here")


def _prompts(model):
  source = common.ruler_source(("niah_single_1",), lengths=(FLAGS.length,),
                               num_samples=FLAGS.num_samples, seed=3000)
  samples = sources_lib.build_samples([source], model.tokenizer)
  from kvp_jax import samples as samples_lib  # pylint: disable=g-import-not-at-top
  return model.tokenizer.encode_batch(
      [samples_lib.prompt_text(s) for s in samples], add_bos=True)


def main(_):
  model = model_lib.load_model(common.model_config(
      FLAGS.model, source=FLAGS.source))
  emit = _timing.Emitter(FLAGS.out)
  prompts = [list(p) for p in _prompts(model)]
  scorer = scorers_lib.get_scorer(FLAGS.scorer)
  n = FLAGS.max_new_tokens
  full = eviction_lib.Eviction(None)
  cell = eviction_lib.Eviction(FLAGS.budget)
  holder = {}

  def prefill():
    holder["context"] = eviction_lib.prefill_context(
        model, prompts, capture=scorer.needs_prefill_attention)
    return holder["context"].cache

  prefill_s = _timing.median_seconds(prefill, FLAGS.repeats)
  context = holder["context"]
  answer, _ = eviction_lib.generate_compressed(model, scorer, full, context,
                                               n, eos_id=-1)
  conts = [a[:n] for a in answer]
  full_logits_s = _timing.median_seconds(
      lambda: eviction_lib.continuation_logits(model, scorer, full, context,
                                               conts)[0], FLAGS.repeats)
  full_logits, _ = eviction_lib.continuation_logits(model, scorer, full,
                                                    context, conts)
  width = full_logits.shape[1]
  tokens = np.zeros((len(conts), width), np.int32)
  mask = np.zeros((len(conts), width), bool)
  for i, c in enumerate(conts):
    tokens[i, :len(c)], mask[i, :len(c)] = c, True
  tokens, mask = jnp.asarray(tokens), jnp.asarray(mask)

  def generation():
    return eviction_lib.generate_compressed(model, scorer, cell, context, n,
                                            eos_id=-1)[0]

  def fidelity():
    logits, _ = eviction_lib.continuation_logits(model, scorer, cell, context,
                                                 conts)
    return _fidelity.fidelity_metrics(full_logits, logits, tokens, mask)

  gen_s = _timing.median_seconds(generation, FLAGS.repeats)
  fid_s = _timing.median_seconds(fidelity, FLAGS.repeats)
  metrics = {k: np.asarray(v).tolist() for k, v in fidelity().items()}
  emit.emit(dict(
      device=_timing.device_line(), model=FLAGS.model, source=FLAGS.source,
      batch=len(prompts), context=[len(p) for p in prompts],
      answer_tokens=n, budget=FLAGS.budget, scorer=FLAGS.scorer,
      shared_prefill_s=prefill_s, full_logits_once_per_batch_s=full_logits_s,
      generation_cell_s=gen_s, fidelity_cell_s=fid_s,
      fidelity_cheaper_x=gen_s / fid_s, metrics=metrics))


if __name__ == "__main__":
  app.run(main)
