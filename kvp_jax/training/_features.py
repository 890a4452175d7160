"""Where the agents' inputs come from: the two feature sources.

"stored": keys and values were read from the trace store into the batch.
"recomputed": the batch holds token ids; the frozen decoder recomputes the
  keys and values on the device inside the step (about 100 bytes a token to
  read instead of ~18 KB for Gemma 3 270M, at the cost of a forward pass).
Both return [A, B, T, H] arrays, A = layers x KV heads.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kvp_jax.model import Decoder, DecoderConfig


def stored_features(batch: dict, params=None) -> tuple[jax.Array, jax.Array]:
  """keys/values [B, A, T, H] of the batch -> [A, B, T, H]."""
  del params
  return (jnp.swapaxes(batch["keys"], 0, 1),
          jnp.swapaxes(batch["values"], 0, 1))


def recomputed_features(batch: dict, params, *, config: DecoderConfig,
                        layers: tuple[int, int] | None = None
                        ) -> tuple[jax.Array, jax.Array]:
  """Keys and values of the batch's tokens from a capture forward.

  Args:
    batch: with tokens and positions [B, T].
    params: the frozen decoder's params (an argument of the step).
    config: the decoder's config; only the layers up to the last one needed
      are run.
  """
  start, stop = layers or (0, config.num_layers)
  cfg = config.replace(num_layers=stop)
  sub = {k: v for k, v in params.items()
         if not k.startswith("layer_") or int(k.split("_")[1]) < stop}
  out = Decoder(cfg).apply({"params": sub}, batch["tokens"],
                           batch["positions"], logits_at="none", capture=True)
  def gather(name):
    x = jnp.stack([getattr(c, name) for c in out.captured[start:stop]])
    # [L', B, T, K, H] -> [L' * K, B, T, H]
    x = jnp.moveaxis(x, 3, 1)
    return x.reshape(-1, *x.shape[2:])
  return (jax.lax.stop_gradient(gather("k")),
          jax.lax.stop_gradient(gather("v")))
