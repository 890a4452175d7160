"""Teacher-forced continuation logits through a compressed cache, against
token-by-token decoding and the full cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import eviction as eviction_lib
from kvp_jax import model as model_lib
from kvp_jax import scorers
from kvp_jax.evaluation import _fidelity


@pytest.fixture(scope="module")
def tiny():
  config = model_lib.tiny(sliding_window=16, vocab_size=64)
  params = model_lib.init_params(config, jax.random.key(0))
  return model_lib.Pretrained(config, params, None, "x", "random")


def _data(n=3, seed=0):
  rng = np.random.default_rng(seed)
  prompts = [list(rng.integers(3, 64, int(rng.integers(40, 70))))
             for _ in range(n)]
  conts = [list(rng.integers(3, 64, int(rng.integers(5, 12))))
           for _ in range(n)]
  return prompts, conts


def _mask(conts, width):
  tokens = np.zeros((len(conts), width), np.int32)
  mask = np.zeros((len(conts), width), bool)
  for i, c in enumerate(conts):
    tokens[i, :len(c)] = c
    mask[i, :len(c)] = True
  return jnp.asarray(tokens), jnp.asarray(mask)


def _stepwise_logits(model, pre, conts, width):
  """Reference: feed the continuation one token at a time through the
  compressed cache (the decode loop's path), [B, width, V]."""
  tokens = np.zeros((len(conts), width), np.int32)
  for i, c in enumerate(conts):
    tokens[i, :len(c)] = c
  decoder = model_lib.Decoder(model.config)
  cache, out = pre.cache, [np.asarray(pre.first_logits, np.float32)]
  for t in range(width - 1):
    pos = jnp.asarray(pre.lengths[:, None] + t, jnp.int32)
    res = decoder.apply({"params": model.params},
                        jnp.asarray(tokens[:, t:t + 1]), pos, cache,
                        logits_at="last")
    cache = res.cache
    out.append(np.asarray(res.logits, np.float32))
  return np.stack(out, axis=1)


def test_one_pass_equals_token_by_token(tiny):
  prompts, conts = _data()
  knorm = scorers.get_scorer("knorm")
  eviction = eviction_lib.Eviction(24)
  context = eviction_lib.prefill_context(tiny, prompts, capture=False)
  got, _ = eviction_lib.continuation_logits(tiny, knorm, eviction, context,
                                            conts)
  width = got.shape[1]
  assert width >= max(map(len, conts))
  pre = eviction_lib.compress_context(tiny, context, knorm, eviction, width)
  want = _stepwise_logits(tiny, pre, conts, width)
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-4, rtol=1e-4)
  tokens, mask = _mask(conts, width)
  ref = jnp.asarray(np.argmax(want, -1) == np.asarray(tokens))
  agree = _fidelity.fidelity_metrics(got, got, tokens, mask)["top1_agreement"]
  want_agree = 100 * np.sum(np.asarray(ref & mask), 1) / np.sum(mask, 1)
  np.testing.assert_allclose(np.asarray(agree), want_agree, atol=1e-4)


def test_log_likelihood_matches_continuation_scoring(tiny):
  prompts, conts = _data(seed=1)
  knorm = scorers.get_scorer("knorm")
  for eviction in (eviction_lib.Eviction(24),
                   eviction_lib.Eviction(24, protocol="decode",
                                         decode_interval=4)):
    logits, _ = eviction_lib.continuation_logits(tiny, knorm, eviction,
                                                 prompts, conts)
    ll, _ = eviction_lib.continuation_log_likelihood(tiny, knorm, eviction,
                                                     prompts, conts)
    logp = np.asarray(jax.nn.log_softmax(logits, -1))
    for i, c in enumerate(conts):
      np.testing.assert_allclose(logp[i, np.arange(len(c)), c], ll[i],
                                 atol=2e-4)


def test_budget_at_least_the_context_is_exact(tiny):
  prompts, conts = _data(seed=2)
  knorm = scorers.get_scorer("knorm")
  context = eviction_lib.prefill_context(tiny, prompts, capture=False)
  full, _ = eviction_lib.continuation_logits(
      tiny, knorm, eviction_lib.Eviction(None), context, conts)
  # The full cache's own greedy tokens as the continuation.
  greedy = [list(np.asarray(jnp.argmax(full[i, :len(c)], -1)))
            for i, c in enumerate(conts)]
  tokens, mask = _mask(greedy, full.shape[1])
  big, _ = eviction_lib.continuation_logits(
      tiny, knorm, eviction_lib.Eviction(256), context, conts)
  m = _fidelity.fidelity_metrics(full, big, tokens, mask)
  np.testing.assert_allclose(np.asarray(m["top1_agreement"]), 100.0)
  np.testing.assert_allclose(np.asarray(m["kl"]), 0.0, atol=1e-5)
  small, _ = eviction_lib.continuation_logits(
      tiny, knorm, eviction_lib.Eviction(24), context, conts)
  m = _fidelity.fidelity_metrics(full, small, tokens, mask)
  assert float(np.mean(m["kl"])) > 1e-4    # Eviction does change something.


def test_logits_written_a_chunk_at_a_time_are_the_decoders(tiny,
                                                            monkeypatch):
  """The [B, W, V] result is written in place a chunk of positions at a
  time (its peak memory is one copy); every chunking, and the decode
  protocol's pieces, gives exactly the decoder's own logits."""
  from kvp_jax.eviction import _runtime  # pylint: disable=g-import-not-at-top
  prompts, conts = _data(seed=3)
  knorm = scorers.get_scorer("knorm")
  context = eviction_lib.prefill_context(tiny, prompts, capture=False)
  eviction = eviction_lib.Eviction(24)
  whole, _ = eviction_lib.continuation_logits(tiny, knorm, eviction, context,
                                              conts)
  width = whole.shape[1]
  pre = eviction_lib.compress_context(tiny, context, knorm, eviction, width)
  tokens = np.zeros((len(conts), width), np.int32)
  for i, c in enumerate(conts):
    tokens[i, :len(c)] = c
  pos = jnp.asarray(pre.lengths[:, None] + np.arange(width - 1)[None],
                    jnp.int32)
  ref = model_lib.Decoder(tiny.config).apply(
      {"params": tiny.params}, jnp.asarray(tokens[:, :-1]), pos, pre.cache,
      logits_at="all").logits                                     # [B, W-1, V]
  np.testing.assert_array_equal(np.asarray(whole[:, 0]),
                                np.asarray(pre.first_logits, np.float32))
  np.testing.assert_allclose(np.asarray(whole[:, 1:]), np.asarray(ref),
                             atol=1e-5, rtol=1e-5)
  for chunk in (1, 3, width + 5):
    monkeypatch.setattr(_runtime, "_logits_chunk", lambda b, v, c=chunk: c)
    got, _ = eviction_lib.continuation_logits(tiny, knorm, eviction,
                                              context, conts)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(whole))
  monkeypatch.setattr(_runtime, "_logits_chunk", lambda b, v: 2)
  decode = eviction_lib.Eviction(24, protocol="decode", decode_interval=3)
  got, _ = eviction_lib.continuation_logits(tiny, knorm, decode, context,
                                            conts)
  monkeypatch.undo()
  want, _ = eviction_lib.continuation_logits(tiny, knorm, decode, context,
                                             conts)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  assert _runtime._logits_chunk(8, 262144) == 64   # 512 MiB for Gemma 3.


def test_empty_continuation_is_refused(tiny):
  with pytest.raises(ValueError, match="non-empty continuation"):
    eviction_lib.continuation_logits(
        tiny, scorers.get_scorer("knorm"), eviction_lib.Eviction(24),
        [[1, 2, 3]], [[]])
