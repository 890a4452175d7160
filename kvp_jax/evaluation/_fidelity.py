"""Teacher-forced fidelity of a compressed cache to the full one.

Both caches read the same continuation and give a next-token distribution
at every position; the compressed cache is faithful where its distribution
matches the full cache's. Per row, over the masked positions t:

  top1_agreement = 100 * mean_t [argmax_v c[t, v] == full_tokens[t]]
  kl             = mean_t KL(p_full(t) || p_compressed(t))
  log_likelihood = sum_t log p_compressed(tokens[t] | t)

full_tokens[t] is the full cache's token at t. On a RULER-style suite the
continuation is the full cache's greedy answer, so full_tokens = tokens.
On a perplexity suite the continuation is the reference text, which is not
the full cache's: there full_tokens[t] = argmax_v f[t, v], the full cache's
own prediction after the same teacher-forced prefix (agreement with the
reference tokens would measure the model's accuracy on the text, nearly the
same for every cache, not the compressed cache's fidelity).

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

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.jit, static_argnames=("agree_with",))
def fidelity_metrics(full_logits: jax.Array, compressed_logits: jax.Array,
                     tokens: jax.Array, mask: jax.Array,
                     agree_with: str = "tokens") -> dict[str, jax.Array]:
  """Top-1 agreement, KL(full || compressed) and log-likelihood per row.

  Args:
    full_logits: [batch, tokens, vocab] the full cache's next-token logits;
      position t is the distribution of tokens[:, t] (already shifted).
    compressed_logits: [batch, tokens, vocab] the compressed cache's, at the
      same positions (teacher-forced on the same tokens).
    tokens: [batch, tokens] int, the continuation read (the full cache's
      greedy answer, or a reference text); any value where mask is False.
    mask: [batch, tokens] bool, the positions scored.
    agree_with: what the compressed argmax is compared with: "tokens" (the
      continuation is the full cache's own greedy output) or "full_argmax"
      (the full cache's argmax at each position: for a reference text).
  Returns:
    dict of [batch] arrays:
      top1_agreement: float32 percent of masked positions where the
        compressed argmax equals the full cache's token (ties: the lowest
        token id).
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
  if agree_with == "tokens":
    full_tokens = idx
  elif agree_with == "full_argmax":
    full_tokens = jnp.argmax(f, axis=-1)
  else:
    raise ValueError(f"agree_with must be 'tokens' or 'full_argmax', not "
                     f"{agree_with!r}")
  agree = jnp.argmax(c, axis=-1) == full_tokens
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
