"""The Flax decoder against an independent numpy forward, and the KV cache
(token-by-token decoding, chunked prefill, ring buffers, padding) against one
full forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import inference
from kvp_jax import model as model_lib
from tests.model import numpy_reference


def _random_params(config, seed=0):
  params = model_lib.init_params(config, jax.random.key(seed))
  # Norm scales start at ones; randomise them so a wrong norm cannot hide.
  def jitter(path, x):
    if "scale" in jax.tree_util.keystr(path):
      return x + 0.3 * jax.random.normal(jax.random.key(len(str(path))),
                                         x.shape)
    return x
  return jax.tree_util.tree_map_with_path(jitter, params)


def _full_logits(config, params, tokens):
  t = tokens.shape[1]
  positions = jnp.broadcast_to(jnp.arange(t), tokens.shape)
  return model_lib.Decoder(config).apply({"params": params}, tokens,
                                         positions).logits


@pytest.mark.parametrize("overrides", [
    {},
    {"attention_pattern": ("global",)},
    {"num_kv_heads": 4},
    {"attn_logit_softcap": 5.0, "final_logit_softcap": 3.0},
])
def test_matches_numpy_reference(overrides):
  config = model_lib.tiny(**overrides)
  params = _random_params(config)
  tokens = np.random.default_rng(0).integers(0, config.vocab_size, 21)
  got = _full_logits(config, params, jnp.asarray(tokens)[None])[0]
  if config.attn_logit_softcap or config.final_logit_softcap:
    # The reference has no soft-capping: check capping bounds the logits and
    # leaves the uncapped model's argmax ranking of small logits intact.
    assert float(jnp.max(jnp.abs(got))) <= config.final_logit_softcap + 1e-5
    return
  want = numpy_reference.forward(config, params, tokens)
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-4, rtol=1e-4)


def test_reference_sees_window():
  """The window matters: the numpy forward with and without it differ."""
  config = model_lib.tiny()
  params = _random_params(config)
  tokens = np.random.default_rng(1).integers(0, config.vocab_size, 20)
  a = numpy_reference.forward(config, params, tokens)
  b = numpy_reference.forward(config.replace(sliding_window=100), params,
                              tokens)
  assert np.abs(a[:config.sliding_window] - b[:config.sliding_window]).max() < 1e-9
  assert np.abs(a[-1] - b[-1]).max() > 1e-3


def _decode_one_by_one(config, params, tokens, prefill_len, capacities):
  """Prefill the first tokens, then feed the rest one at a time."""
  b, t = tokens.shape
  pos = jnp.broadcast_to(jnp.arange(t), (b, t)).astype(jnp.int32)
  logits, cache, _ = inference.prefill(config, params, tokens[:, :prefill_len],
                                       pos[:, :prefill_len], capacities)
  out = [logits]
  for i in range(prefill_len, t):
    logits, cache, _ = inference.extend(config, params, cache,
                                        tokens[:, i:i + 1], pos[:, i:i + 1])
    out.append(logits)
  return jnp.stack(out, axis=1)          # logits at positions prefill_len-1..t-1


@pytest.mark.parametrize("window_rings", [True, False])
def test_cached_decoding_matches_full_forward(window_rings):
  config = model_lib.tiny()
  params = _random_params(config)
  t = 3 * config.sliding_window + 5          # Crosses the window repeatedly.
  tokens = jax.random.randint(jax.random.key(2), (2, t), 0, config.vocab_size)
  caps = model_lib.layer_capacities(config, t, window_rings=window_rings)
  if window_rings:
    assert caps[0] == config.sliding_window < t   # The ring wraps.
  got = _decode_one_by_one(config, params, tokens, 5, caps)
  want = _full_logits(config, params, tokens)[:, 4:]
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4)


def test_chunked_prefill_matches_full_forward():
  config = model_lib.tiny()
  params = _random_params(config)
  t = 30
  tokens = jax.random.randint(jax.random.key(3), (1, t), 0, config.vocab_size)
  pos = jnp.arange(t)[None].astype(jnp.int32)
  caps = model_lib.layer_capacities(config, t)
  _, cache, _ = inference.prefill(config, params, tokens[:, :7], pos[:, :7],
                                  caps)
  for start in (7, 18):                       # Chunks of 11 and 12 tokens.
    stop = start + 11 if start == 7 else t
    logits, cache, _ = inference.extend(config, params, cache,
                                        tokens[:, start:stop],
                                        pos[:, start:stop])
  want = _full_logits(config, params, tokens)[:, -1]
  np.testing.assert_allclose(np.asarray(logits), np.asarray(want), atol=1e-4)


def test_left_padded_batch_matches_single_rows():
  config = model_lib.tiny()
  params = _random_params(config)
  rng = np.random.default_rng(4)
  prompts = [list(rng.integers(3, config.vocab_size, n)) for n in (5, 13, 9)]
  model = model_lib.Pretrained(config, params, None, "x", "random")
  batched = inference.generate(model, prompts, 12, eos_id=-1, pad_multiple=16)
  for prompt, row in zip(prompts, batched):
    single = inference.generate(model, [prompt], 12, eos_id=-1, pad_multiple=16)
    assert row == single[0]
  # And greedy decoding agrees with argmax of full forwards (right-padded to
  # one shape: causal attention ignores the padding after the last token).
  full = jax.jit(lambda t: _full_logits(config, params, t))
  seq = list(prompts[1])
  for _ in range(12):
    padded = jnp.zeros((1, 32), jnp.int32).at[0, :len(seq)].set(jnp.asarray(seq))
    seq.append(int(jnp.argmax(full(padded)[0, len(seq) - 1])))
  assert batched[1] == seq[len(prompts[1]):]


def test_logits_at_selects_positions():
  config = model_lib.tiny()
  params = _random_params(config)
  tokens = jax.random.randint(jax.random.key(5), (2, 10), 0, config.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(10), (2, 10))
  dec = model_lib.Decoder(config)
  full = dec.apply({"params": params}, tokens, pos).logits
  idx = jnp.asarray([[0, 9], [3, 4]])
  some = dec.apply({"params": params}, tokens, pos, logits_at=idx).logits
  np.testing.assert_allclose(some, jnp.take_along_axis(full, idx[..., None], 1),
                             atol=1e-5)
  last = dec.apply({"params": params}, tokens, pos, logits_at="last").logits
  np.testing.assert_allclose(last, full[:, -1], atol=1e-5)
  out = dec.apply({"params": params}, tokens, pos, logits_at="none")
  assert out.logits is None
  ll = model_lib.token_log_likelihood(config, params, out.hidden, tokens,
                                      chunk=4)
  want = jnp.take_along_axis(jax.nn.log_softmax(full), tokens[..., None],
                             -1)[..., 0]
  np.testing.assert_allclose(ll, want, atol=1e-4)


def test_bfloat16_close_to_float32():
  config = model_lib.tiny()
  params = _random_params(config)
  tokens = jax.random.randint(jax.random.key(6), (1, 16), 0, config.vocab_size)
  f32 = _full_logits(config, params, tokens)
  bf16 = _full_logits(config.replace(compute_dtype="bfloat16",
                                     param_dtype="bfloat16"),
                      jax.tree_util.tree_map(
                          lambda x: x.astype(jnp.bfloat16), params), tokens)
  assert bf16.dtype == jnp.float32            # Logits are float32 always.
  rel = jnp.linalg.norm(bf16 - f32) / jnp.linalg.norm(f32)
  assert 1e-5 < float(rel) < 5e-2


def test_query_blocks_do_not_change_the_result():
  config = model_lib.tiny()
  params = _random_params(config)
  tokens = jax.random.randint(jax.random.key(7), (2, 23), 0, config.vocab_size)
  whole = _full_logits(config.replace(attention_query_block=None), params,
                       tokens)
  blocked = _full_logits(config.replace(attention_query_block=5), params,
                         tokens)
  np.testing.assert_allclose(np.asarray(blocked), np.asarray(whole), atol=1e-5)
