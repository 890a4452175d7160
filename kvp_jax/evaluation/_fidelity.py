"""Teacher-forced fidelity of a compressed cache to the full one.

Both caches read the same continuation (the full cache's tokens) and give a
next-token distribution at every position; the compressed cache is faithful
where its distribution matches the full cache's. Per row, over the masked
positions t:

  top1_agreement = 100 * mean_t [argmax_v c[t, v] == tokens[t]]
  kl             = mean_t KL(p_full(t) || p_compressed(t))
  log_likelihood = sum_t log p_compressed(tokens[t] | t)

with p = softmax(logits). KL(p || q) is computed from logsumexps without
forming either log-softmax:

  KL = sum_v p_v (f_v - c_v) - (lse(f) - lse(c)),   p = exp(f - lse(f)),

so under jit every [batch, tokens, vocab] expression fuses into a reduction
and, for float32 logits, no vocabulary-sized temporary is materialised (the
vocabulary is 262,144 for Gemma 3). Logits of another dtype are upcast to
float32, which may cost one float32 copy of each input (what log_softmax
would need too). Everything is computed in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.jit
def fidelity_metrics(full_logits: jax.Array, compressed_logits: jax.Array,
                     tokens: jax.Array, mask: jax.Array
                     ) -> dict[str, jax.Array]:
  """Top-1 agreement, KL(full || compressed) and log-likelihood per row.

  Args:
    full_logits: [batch, tokens, vocab] the full cache's next-token logits;
      position t is the distribution of tokens[:, t] (already shifted).
    compressed_logits: [batch, tokens, vocab] the compressed cache's, at the
      same positions (teacher-forced on the same tokens).
    tokens: [batch, tokens] int, the full cache's tokens (e.g. its greedy
      continuation); any value where mask is False.
    mask: [batch, tokens] bool, the positions scored.
  Returns:
    dict of [batch] arrays:
      top1_agreement: float32 percent of masked positions where the
        compressed argmax equals tokens (ties: the lowest token id).
      kl: float32 mean over masked positions of KL(full || compressed), in
        nats, clipped at 0 per position (float32 rounding).
      log_likelihood: float32 sum over masked positions of the log
        probability of tokens under the compressed cache.
      tokens: int32 number of masked positions.
    top1_agreement and kl are NaN for a row without masked positions (its
    log_likelihood is 0).
  """
  f = full_logits.astype(jnp.float32)
  c = compressed_logits.astype(jnp.float32)
  mask = mask.astype(bool)
  vocab = f.shape[-1]
  lse_f = jax.nn.logsumexp(f, axis=-1)                              # [B, T]
  lse_c = jax.nn.logsumexp(c, axis=-1)
  cross = jnp.sum(jnp.exp(f - lse_f[..., None]) * (f - c), axis=-1)
  kl = jnp.maximum(cross - (lse_f - lse_c), 0.0)
  idx = jnp.clip(tokens.astype(jnp.int32), 0, vocab - 1)
  token_logit = jnp.take_along_axis(c, idx[..., None], axis=-1)[..., 0]
  ll = token_logit - lse_c
  agree = jnp.argmax(c, axis=-1) == idx
  count = jnp.sum(mask, axis=-1).astype(jnp.int32)                  # [B]
  denom = jnp.where(count > 0, count, 1).astype(jnp.float32)
  nan = jnp.float32(jnp.nan)

  def masked_mean(x):
    return jnp.where(count > 0, jnp.sum(jnp.where(mask, x, 0.0), -1) / denom,
                     nan)

  return {
      "top1_agreement": 100.0 * masked_mean(agree.astype(jnp.float32)),
      "kl": masked_mean(kl),
      "log_likelihood": jnp.sum(jnp.where(mask, ll, 0.0), axis=-1),
      "tokens": count,
  }
