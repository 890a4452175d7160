"""Generation and continuation scoring through an evicted cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import eviction as eviction_lib
from kvp_jax import inference
from kvp_jax import model as model_lib
from kvp_jax import scorers


@pytest.fixture(scope="module")
def tiny():
  config = model_lib.tiny(sliding_window=16, vocab_size=64)
  params = model_lib.init_params(config, jax.random.key(0))
  return model_lib.Pretrained(config, params, None, "x", "random")


def _prompts(n=3, low=40, high=70, seed=0):
  rng = np.random.default_rng(seed)
  return [list(rng.integers(3, 64, int(rng.integers(low, high))))
          for _ in range(n)]


def test_full_and_large_budgets_match_the_uncompressed_model(tiny):
  prompts = _prompts()
  want = inference.generate(tiny, prompts, 10, eos_id=-1)
  knorm = scorers.get_scorer("knorm")
  full, _ = eviction_lib.generate_compressed(
      tiny, knorm, eviction_lib.Eviction(None), prompts, 10, eos_id=-1)
  assert full == want
  for protocol in eviction_lib.PROTOCOLS:
    got, _ = eviction_lib.generate_compressed(
        tiny, knorm, eviction_lib.Eviction(256, protocol=protocol,
                                         chunk_size=32, decode_interval=64),
        prompts, 10, eos_id=-1)
    assert got == want, protocol


def test_budget_bounds_memory(tiny):
  prompts = _prompts(low=90, high=120)
  knorm = scorers.get_scorer("knorm")
  sizes = {}
  for b in (24, 48):
    _, stats = eviction_lib.generate_compressed(
        tiny, knorm, eviction_lib.Eviction(b), prompts, 8, eos_id=-1)
    sizes[b] = stats["cache_bytes"]
  _, full = eviction_lib.generate_compressed(
      tiny, knorm, eviction_lib.Eviction(None), prompts, 8, eos_id=-1)
  assert sizes[24] < sizes[48] < full["cache_bytes"]
  # Chunked prefill: the cache never holds more than b + chunk per head.
  _, stats = eviction_lib.generate_compressed(
      tiny, knorm, eviction_lib.Eviction(24, protocol="chunked", chunk_size=16),
      prompts, 8, eos_id=-1)
  assert stats["peak_slots"] <= 24 + 16
  # Eviction during decoding: the cache stays at b + interval.
  _, stats = eviction_lib.generate_compressed(
      tiny, knorm, eviction_lib.Eviction(24, protocol="decode",
                                       decode_interval=4),
      prompts, 13, eos_id=-1)
  assert stats["final_cache_bytes"] == stats["cache_bytes"]


def test_every_scorer_generates(tiny):
  prompts = _prompts(2)
  n = max(map(len, prompts))
  importance = np.random.default_rng(0).random(
      (2, tiny.config.num_layers, tiny.config.num_kv_heads, n + 8))
  for name in scorers.available_scorers():
    if name == "kvp":
      continue
    out, _ = eviction_lib.generate_compressed(
        tiny, scorers.get_scorer(name), eviction_lib.Eviction(24), prompts, 4,
        importance=importance, eos_id=-1)
    assert [len(o) for o in out] == [4, 4], name


def test_adaptive_allocation_keeps_the_total(tiny):
  prompts = _prompts(2, low=80, high=90)
  knorm = scorers.get_scorer("knorm")
  held = [np.asarray(l.pos >= 0).sum(axis=(1, 2)) for l in
          eviction_lib.prefill_compressed(
              tiny, knorm, eviction_lib.Eviction(None), prompts,
              0).cache.layers]
  k = tiny.config.num_kv_heads
  for scope in ("layer", "model"):
    pre = eviction_lib.prefill_compressed(
        tiny, knorm, eviction_lib.Eviction(24, allocation=scope), prompts, 0)
    kept = [np.asarray(l.pos >= 0).sum(axis=(1, 2)) for l in pre.cache.layers]
    if scope == "layer":          # Each layer shares 24 x K (or all it holds).
      for got, have in zip(kept, held):
        np.testing.assert_array_equal(got, np.minimum(have, 24 * k))
    else:                         # The model shares 24 x K x L.
      total = 24 * k * tiny.config.num_layers
      np.testing.assert_array_equal(sum(kept), np.minimum(sum(held), total))
      # Windowed layers hold only their 16-slot ring: the global layer takes
      # what they cannot use.
      assert np.all(kept[2] > 24 * k)


def test_continuation_likelihood(tiny):
  contexts = _prompts(2, low=50, high=60)
  conts = _prompts(2, low=9, high=14, seed=1)
  knorm = scorers.get_scorer("knorm")
  full, _ = eviction_lib.continuation_log_likelihood(
      tiny, knorm, eviction_lib.Eviction(None), contexts, conts)
  for i, (c, k) in enumerate(zip(contexts, conts)):
    seq = jnp.asarray(c + k)[None]
    logits = model_lib.Decoder(tiny.config).apply(
        {"params": tiny.params}, seq, jnp.arange(seq.shape[1])[None]).logits
    want = jax.nn.log_softmax(logits[0, len(c) - 1:-1])[
        jnp.arange(len(k)), jnp.asarray(k)]
    np.testing.assert_allclose(full[i], want, atol=1e-4)
  for protocol in eviction_lib.PROTOCOLS:
    big, _ = eviction_lib.continuation_log_likelihood(
        tiny, knorm, eviction_lib.Eviction(256, protocol=protocol,
                                         chunk_size=32, decode_interval=4),
        contexts, conts)
    for a, b in zip(big, full):
      np.testing.assert_allclose(a, b, atol=1e-4)
  small, _ = eviction_lib.continuation_log_likelihood(
      tiny, knorm, eviction_lib.Eviction(24), contexts, conts)
  assert not np.allclose(small[0], full[0], atol=1e-3)


def test_bad_settings():
  with pytest.raises(ValueError, match="protocol"):
    eviction_lib.Eviction(64, protocol="sometimes")
  with pytest.raises(ValueError, match="below the minimum"):
    eviction_lib.Eviction(8)
  with pytest.raises(ValueError, match="int"):
    eviction_lib.Eviction(64.5)
  with pytest.raises(ValueError, match="unknown scorer 'nope'"):
    scorers.get_scorer("nope")


def test_shared_context_gives_the_same_results(tiny):
  prompts = _prompts(2)
  context = eviction_lib.prefill_context(tiny, prompts, capture=True)
  for name in ("knorm", "snapkv", "h2o"):
    scorer = scorers.get_scorer(name)
    for budget in (24, 40, None):
      eviction = eviction_lib.Eviction(budget)
      shared, _ = eviction_lib.generate_compressed(tiny, scorer, eviction,
                                                 context, 6, eos_id=-1)
      alone, _ = eviction_lib.generate_compressed(tiny, scorer, eviction,
                                                prompts, 6, eos_id=-1)
      assert shared == alone, (name, budget)
  # The context's full cache is still intact after all those compressions.
  again, _ = eviction_lib.generate_compressed(
      tiny, scorers.get_scorer("knorm"), eviction_lib.Eviction(None), context, 6,
      eos_id=-1)
  assert again == inference.generate(tiny, prompts, 6, eos_id=-1)
