"""Attention statistics against a dense numpy computation."""

import jax
import numpy as np
import pytest

from kvp_jax.scorers import attention_column_sums
from kvp_jax.scorers import last_queries_attention

B, K, N, S, H = 2, 2, 4, 40, 8
G = N // K


def _inputs(seed):
  """Queries for every position of two rows (row 1 left-padded by 5) and a
  cache of shuffled slots with some empty."""
  rng = np.random.default_rng(seed)
  lengths = [38, 33]
  t = max(lengths)
  q = rng.normal(size=(B, t, N, H)).astype(np.float32)
  qpos = np.full((B, t), -1, np.int32)
  key_pos = np.full((B, K, S), -1, np.int32)
  for b, n in enumerate(lengths):
    qpos[b, t - n:] = np.arange(n)
    for k in range(K):
      kept = np.sort(rng.choice(n, size=n - 4, replace=False))
      key_pos[b, k, :len(kept)] = kept
      key_pos[b, k] = rng.permutation(key_pos[b, k])
  keys = rng.normal(size=(B, K, S, H)).astype(np.float32)
  return q, qpos, keys, key_pos


def _dense_probs(q, qpos, keys, key_pos, window, softcap):
  """[B, K, G, T, S] by loops over rows, heads and queries."""
  b_, t, n, _ = q.shape
  out = np.zeros((b_, K, G, t, S))
  for b in range(b_):
    for h in range(n):
      k = h // G
      for i in range(t):
        p = qpos[b, i]
        kp = key_pos[b, k]
        see = (kp >= 0) & (kp <= p)
        if window is not None:
          see &= p - kp < window
        if p < 0 or not see.any():
          continue
        logits = keys[b, k].astype(np.float64) @ q[b, i, h].astype(np.float64)
        if softcap is not None:
          logits = np.tanh(logits / softcap) * softcap
        e = np.exp(logits[see] - logits[see].max())
        out[b, k, h % G, i, see] = e / e.sum()
  return out


@pytest.mark.parametrize("window,softcap,block", [
    (None, None, 16), (7, None, 5), (None, 2.0, 512)])
def test_attention_column_sums_match_dense(window, softcap, block):
  q, qpos, keys, key_pos = _inputs(0)
  got = attention_column_sums(q, qpos, keys, key_pos, window, block=block,
                              softcap=softcap)
  want = _dense_probs(q, qpos, keys, key_pos, window, softcap)
  want = want.sum(axis=3).mean(axis=2)
  assert got.shape == (B, K, S) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(got)[key_pos < 0], 0.0)


@pytest.mark.parametrize("window", [None, 7])
def test_last_queries_attention_match_dense(window):
  q, qpos, keys, key_pos = _inputs(1)
  q, qpos = q[:, -6:], qpos[:, -6:]
  qpos[1, :2] = -1   # Padding queries get zeros.
  got = jax.jit(last_queries_attention, static_argnums=4)(
      q, qpos, keys, key_pos, window)
  want = _dense_probs(q, qpos, keys, key_pos, window, None)
  assert got.shape == (B, K, G, 6, S) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(got).sum(-1)[0], 1.0, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(got)[1, :, :, :2], 0.0)
