r"""KVP under the eviction protocols and budget allocations that go beyond
the paper, each against the paper's setting (compress once after the
prefill, the same budget for every head), on the quickstart's policy and
held-out suites (run the quickstart first).

  for setting in once,uniform chunked,uniform decode,uniform once,layer \
      once,model; do
    IFS=, read protocol allocation <<< "$setting"
    python -m kvp_jax.evaluate --config=experiments/protocols.py \
        --workdir=runs/quickstart --config.eval.protocol=$protocol \
        --config.eval.allocation=$allocation \
        --config.eval.output_dir=runs/quickstart/protocols/$protocol-$allocation
  done

  chunked  the prompt is prefilled 256 tokens at a time and the cache is
           evicted to the budget after every chunk (peak: budget + chunk).
  decode   the cache is held at the budget during generation: when it is
           full, the lowest-ranked entries go, every 16 new tokens.
  layer    one budget of (budget x KV heads) per layer, shared among its
           heads by calibrated scores; model: one budget for all heads of
           the model (Gemma 3 270M has one KV head a layer, so "layer" is
           "uniform" there and "model" is the interesting one).
"""

from experiments import quickstart


def get_config():
  c = quickstart.get_config()
  c.eval.update(scorers=["kvp", "knorm"], chunk_size=256, decode_interval=16)
  return c
