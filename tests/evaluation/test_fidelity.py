"""Teacher-forced fidelity metrics against a float64 numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax.evaluation import _fidelity


def _reference(full, comp, tokens, mask, agree_with="tokens"):
  """Per position with float64 log-softmaxes, then per row by loops."""
  def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
  lf, lc = log_softmax(full), log_softmax(comp)
  out = {k: [] for k in ("top1_agreement", "kl", "log_likelihood", "tokens")}
  for b in range(full.shape[0]):
    ts = [t for t in range(full.shape[1]) if mask[b, t]]
    target = lambda t: (tokens[b, t] if agree_with == "tokens"
                        else np.argmax(full[b, t]))
    agree = [np.argmax(comp[b, t]) == target(t) for t in ts]
    kl = [np.sum(np.exp(lf[b, t]) * (lf[b, t] - lc[b, t])) for t in ts]
    out["top1_agreement"].append(100 * np.mean(agree) if ts else np.nan)
    out["kl"].append(np.mean(kl) if ts else np.nan)
    out["log_likelihood"].append(sum(lc[b, t, tokens[b, t]] for t in ts))
    out["tokens"].append(len(ts))
  return {k: np.asarray(v) for k, v in out.items()}


def _inputs(seed, b=3, t=7, v=50, scale=3.0):
  rng = np.random.default_rng(seed)
  full = (scale * rng.normal(size=(b, t, v))).astype(np.float32)
  comp = (full + rng.normal(size=(b, t, v))).astype(np.float32)
  tokens = np.argmax(full, -1).astype(np.int32)          # Greedy full cache.
  tokens[:, ::3] = rng.integers(0, v, size=tokens[:, ::3].shape)
  mask = rng.uniform(size=(b, t)) < 0.7
  mask[0] = True
  mask[-1] = False                                     # A row scoring nothing.
  tokens[-1, 0] = -1                                      # Padding, masked out.
  return full, comp, tokens, mask


def test_identical_logits_agree_fully_with_zero_kl():
  full, _, _, mask = _inputs(0, scale=20.0)
  mask[-1] = True
  tokens = np.argmax(full, -1)
  got = _fidelity.fidelity_metrics(full, full, tokens, mask)
  np.testing.assert_array_equal(got["top1_agreement"], 100.0)
  np.testing.assert_allclose(got["kl"], 0.0, atol=1e-6)
  ref = _reference(full, full, tokens, mask)
  np.testing.assert_allclose(got["log_likelihood"], ref["log_likelihood"],
                             rtol=1e-5, atol=1e-4)


def test_matches_a_numpy_reference_on_random_logits():
  full, comp, tokens, mask = _inputs(1)
  got = {k: np.asarray(v) for k, v in
         _fidelity.fidelity_metrics(full, comp, tokens, mask).items()}
  ref = _reference(full, comp, tokens, mask)
  np.testing.assert_array_equal(got["tokens"], ref["tokens"])
  np.testing.assert_allclose(got["top1_agreement"], ref["top1_agreement"],
                             rtol=1e-6, equal_nan=True)
  np.testing.assert_allclose(got["kl"], ref["kl"], rtol=1e-4, atol=1e-6,
                             equal_nan=True)
  np.testing.assert_allclose(got["log_likelihood"], ref["log_likelihood"],
                             rtol=1e-5, atol=1e-4)
  # The random perturbation gives real disagreement and a positive KL.
  assert 0 < got["top1_agreement"][0] < 100 and got["kl"][0] > 0.05


def test_agreement_with_the_full_argmax_for_a_reference_text():
  """A perplexity suite reads a reference text: agreement is counted against
  the full cache's argmax there, not against the text's tokens."""
  full, comp, tokens, mask = _inputs(5)
  tokens = np.random.default_rng(6).integers(0, full.shape[-1], tokens.shape)
  got = {k: np.asarray(v) for k, v in _fidelity.fidelity_metrics(
      full, comp, tokens, mask, agree_with="full_argmax").items()}
  ref = _reference(full, comp, tokens, mask, agree_with="full_argmax")
  np.testing.assert_allclose(got["top1_agreement"], ref["top1_agreement"],
                             rtol=1e-6, equal_nan=True)
  np.testing.assert_allclose(got["log_likelihood"], ref["log_likelihood"],
                             rtol=1e-5, atol=1e-4)
  by_tokens = np.asarray(_fidelity.fidelity_metrics(
      full, comp, tokens, mask)["top1_agreement"])
  assert got["top1_agreement"][0] > by_tokens[0] + 20     # Not the same count.
  # The full cache agrees with itself everywhere, whatever the text.
  itself = _fidelity.fidelity_metrics(full, full, tokens, mask,
                                      agree_with="full_argmax")
  np.testing.assert_array_equal(np.asarray(itself["top1_agreement"])[:-1],
                                100.0)
  with pytest.raises(ValueError, match="agree_with"):
    _fidelity.fidelity_metrics(full, comp, tokens, mask, agree_with="x")


def test_mask_handling():
  full, comp, tokens, mask = _inputs(2)
  got = _fidelity.fidelity_metrics(full, comp, tokens, mask)
  assert int(got["tokens"][-1]) == 0
  assert np.isnan(got["top1_agreement"][-1]) and np.isnan(got["kl"][-1])
  assert float(got["log_likelihood"][-1]) == 0.0
  # Whatever sits at masked-out positions does not change any result.
  full2, comp2, tokens2 = full.copy(), comp.copy(), tokens.copy()
  full2[~mask] = 100 * np.random.default_rng(3).normal(size=full2[~mask].shape)
  comp2[~mask] = 0.0
  tokens2[~mask] = 10 ** 6
  again = _fidelity.fidelity_metrics(full2, comp2, tokens2, mask)
  for k in got:
    np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(again[k]))
  # A single masked position gives exactly that position's values.
  one = np.zeros_like(mask)
  one[0, 4] = True
  single = _fidelity.fidelity_metrics(full, comp, tokens, one)
  ref = _reference(full[:1, 4:5], comp[:1, 4:5], tokens[:1, 4:5],
                   np.ones((1, 1), bool))
  assert float(single["kl"][0]) == pytest.approx(ref["kl"][0], rel=1e-4)


def test_bfloat16_logits_are_scored_in_float32():
  full, comp, tokens, mask = _inputs(4)
  f16, c16 = jnp.asarray(full, jnp.bfloat16), jnp.asarray(comp, jnp.bfloat16)
  got = _fidelity.fidelity_metrics(f16, c16, tokens, mask)
  ref = _reference(np.asarray(f16, np.float32), np.asarray(c16, np.float32),
                   tokens, mask)
  np.testing.assert_allclose(got["kl"], ref["kl"], rtol=1e-4, atol=1e-6,
                             equal_nan=True)
  assert got["kl"].dtype == jnp.float32


def test_no_vocabulary_sized_temporaries():
  b, t, v = 2, 8, 262144
  logits = jax.ShapeDtypeStruct((b, t, v), jnp.float32)
  compiled = _fidelity.fidelity_metrics.lower(
      logits, logits, jax.ShapeDtypeStruct((b, t), jnp.int32),
      jax.ShapeDtypeStruct((b, t), jnp.bool_)).compile()
  memory = compiled.memory_analysis()
  if memory is None:
    pytest.skip("no memory analysis on this backend")
  # Well under one [batch, tokens, vocab] float32 copy (8 MiB here).
  assert memory.temp_size_in_bytes < b * t * v * 4 // 4
