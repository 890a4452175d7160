"""Future importance against a brute-force numpy computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import inference
from kvp_jax import model as model_lib
from kvp_jax import traces


def brute_force_importance(q, k, split, window, g, value_norms=None):
  """I[kv, j] = sum_{t >= split} max_g softmax_t(q_g[t] . k[j]) (times
  value_norms[j, kv, g] when given), float64.

  q [T, N, H], k [T, K, H] in position order, no padding; value_norms
  [T, K, G].
  """
  t_len, n, _ = q.shape
  kv = k.shape[1]
  out = np.zeros((kv, t_len))
  for head in range(kv):
    for t in range(split, t_len):
      vis = [j for j in range(t + 1) if window is None or t - j < window]
      best = np.zeros(t_len)
      for gq in range(head * g, (head + 1) * g):
        s = np.array([q[t, gq] @ k[j, head] for j in vis], np.float64)
        w = np.exp(s - s.max())
        w /= w.sum()
        if value_norms is not None:
          w = w * value_norms[vis, head, gq - head * g]
        best[vis] = np.maximum(best[vis], w)
      out[head] += best
  out[:, split:] = 0.0
  return out


@pytest.mark.parametrize("window", [None, 6])
def test_importance_matches_brute_force(window):
  rng = np.random.default_rng(0)
  b, t, n, kv, h = 2, 19, 4, 2, 8
  q = rng.normal(size=(b, t, n, h)).astype(np.float32)
  k = rng.normal(size=(b, t, kv, h)).astype(np.float32)
  # Row 1 is right-padded by 3 columns and row 0 is shuffled: columns need
  # not be in position order.
  pos = np.tile(np.arange(t, dtype=np.int32), (b, 1))
  pos[1, -3:] = -1
  perm = rng.permutation(t)
  q[0], k[0], pos[0] = q[0, perm], k[0, perm], pos[0, perm]
  splits = np.asarray([[7, 12, 18], [5, 9, 15]], np.int32)
  got = np.asarray(traces.future_importance(
      jnp.asarray(q), jnp.asarray(k), jnp.asarray(pos), jnp.asarray(splits),
      window, query_block=4))                               # [B, S, K, T]
  for row in range(b):
    order = np.argsort(np.where(pos[row] >= 0, pos[row], 10**6))
    valid = order[pos[row][order] >= 0]
    for s, split in enumerate(splits[row]):
      want = brute_force_importance(q[row][valid], k[row][valid], split,
                                    window, n // kv)
      np.testing.assert_allclose(got[row, s][:, valid], want, rtol=1e-5,
                                 atol=1e-6)
      assert np.all(got[row, s][:, pos[row] < 0] == 0)


def test_window_gives_no_importance_from_outside():
  rng = np.random.default_rng(1)
  t, window, split = 40, 8, 30
  q = jnp.asarray(rng.normal(size=(1, t, 2, 8)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, t, 1, 8)), jnp.float32)
  pos = jnp.arange(t, dtype=jnp.int32)[None]
  imp = traces.future_importance(q, k, pos, jnp.asarray([[split]]), window)
  imp = np.asarray(imp)[0, 0, 0]
  # Queries at >= 30 see keys at > 30 - 8 only.
  assert np.all(imp[:split - window + 1] == 0)
  assert np.all(imp[split - window + 1:split] > 0)
  # Each future query spreads exactly one unit of attention (max over one
  # head = the head itself), part of it on future keys.
  full = traces.future_importance(q[:, :, :1], k, pos, jnp.asarray([[split]]),
                                  None)
  assert float(np.asarray(full).sum()) < t - split


def test_recorded_traces_match_a_full_forward():
  """record_traces (prefill capture + continuation through the cache) gives
  the importance, keys and values of one plain forward over the sequence."""
  config = model_lib.tiny()
  params = model_lib.init_params(config, jax.random.key(0))
  model = model_lib.Pretrained(config, params, None, "x", "random")
  rng = np.random.default_rng(2)
  prompts = [list(rng.integers(3, config.vocab_size, n)) for n in (14, 22)]
  recorded = traces.record_traces(
      model, prompts, None, max_new_tokens=6, num_random_splits=2,
      min_prompt_length=4, rngs=[np.random.default_rng(i) for i in range(2)],
      kv_dtype=jnp.float32, pad_multiple=8)
  dec = model_lib.Decoder(config)
  for prompt, trace in zip(prompts, recorded):
    assert trace.tokens[:len(prompt)].tolist() == prompt
    assert trace.prompt_length == len(prompt)
    assert trace.split_points[0] == len(prompt)
    assert np.all((trace.split_points >= 4) &
                  (trace.split_points < trace.length))
    ids = jnp.asarray(trace.tokens)[None]
    pos = jnp.arange(trace.length, dtype=jnp.int32)[None]
    out = dec.apply({"params": params}, ids, pos, capture=True,
                    logits_at="none")
    # The continuation is the model's greedy one.
    logits = dec.apply({"params": params}, ids, pos).logits[0]
    greedy = np.asarray(jnp.argmax(logits, -1))[len(prompt) - 1:-1]
    assert trace.tokens[len(prompt):].tolist() == greedy.tolist()
    for layer, cap in enumerate(out.captured):
      np.testing.assert_allclose(trace.keys[layer],
                                 np.swapaxes(np.asarray(cap.k[0]), 0, 1),
                                 atol=1e-5)
      np.testing.assert_allclose(trace.values[layer],
                                 np.swapaxes(np.asarray(cap.v[0]), 0, 1),
                                 atol=1e-5)
      for s, split in enumerate(trace.split_points):
        want = brute_force_importance(np.asarray(cap.q[0]),
                                      np.asarray(cap.k[0]), int(split),
                                      config.layer_window(layer),
                                      config.group_size)
        np.testing.assert_allclose(trace.importance[layer, :, s], want,
                                   rtol=1e-4, atol=1e-5)


def test_value_weighted_importance_matches_brute_force():
  """The value-weighted target: each head's weight times ||W_O^g v_j||,
  against the loops above and a per-token numpy norm."""
  rng = np.random.default_rng(4)
  t, n, kv, h, d = 13, 4, 2, 8, 6
  q = rng.normal(size=(1, t, n, h)).astype(np.float32)
  k = rng.normal(size=(1, t, kv, h)).astype(np.float32)
  v = rng.normal(size=(1, t, kv, h)).astype(np.float32)
  o = rng.normal(size=(n, h, d)).astype(np.float32)
  norms = np.asarray(traces.value_write_norms(jnp.asarray(v), jnp.asarray(o)))
  g = n // kv
  for j in range(t):
    for head in range(kv):
      for gq in range(g):
        want = np.linalg.norm(v[0, j, head] @ o[head * g + gq])
        np.testing.assert_allclose(norms[0, j, head, gq], want, rtol=1e-5)
  pos = jnp.arange(t, dtype=jnp.int32)[None]
  got = np.asarray(traces.future_importance(
      jnp.asarray(q), jnp.asarray(k), pos, jnp.asarray([[6]]), None,
      query_block=4, value_norms=jnp.asarray(norms)))[0, 0]
  want = brute_force_importance(q[0], k[0], 6, None, g, norms[0])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  plain = np.asarray(traces.future_importance(
      jnp.asarray(q), jnp.asarray(k), pos, jnp.asarray([[6]]), None))[0, 0]
  assert not np.allclose(got, plain)


def test_recorded_value_weighted_traces_weigh_by_the_output_projection():
  config = model_lib.tiny()
  params = model_lib.init_params(config, jax.random.key(0))
  model = model_lib.Pretrained(config, params, None, "x", "random")
  prompt = list(np.random.default_rng(3).integers(3, config.vocab_size, 17))
  (trace,) = traces.record_traces(model, [prompt], None, max_new_tokens=5,
                                  kv_dtype=jnp.float32, pad_multiple=8,
                                  target="value_weighted")
  ids = jnp.asarray(trace.tokens)[None]
  pos = jnp.arange(trace.length, dtype=jnp.int32)[None]
  out = model_lib.Decoder(config).apply({"params": params}, ids, pos,
                                        capture=True, logits_at="none")
  for layer, cap in enumerate(out.captured):
    o = np.asarray(params[f"layer_{layer}"]["attn"]["o_proj"]["kernel"])
    g = config.group_size
    v = np.asarray(cap.v[0])                                 # [T, K, H]
    norms = np.stack([[[np.linalg.norm(v[j, kh] @ o[kh * g + gq])
                        for gq in range(g)] for kh in range(v.shape[1])]
                      for j in range(v.shape[0])])           # [T, K, G]
    want = brute_force_importance(np.asarray(cap.q[0]), np.asarray(cap.k[0]),
                                  len(prompt), config.layer_window(layer), g,
                                  norms)
    np.testing.assert_allclose(trace.importance[layer, :, 0], want,
                               rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="target 'nope'"):
    traces.record_traces(model, [prompt], None, max_new_tokens=2,
                         target="nope")
