"""Building blocks of the decoder: projections, RMSNorm, RoPE, the gated MLP,
the embedder. Parameters are stored in `param_dtype` and cast to the input's
dtype (the config's compute dtype) where they are used."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class Einsum(nn.Module):
  """A projection `einsum(eqn, x, kernel)` with a kernel of a given shape."""
  shape: tuple[int, ...]
  eqn: str
  param_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = self.shape[0]
    kernel = self.param("kernel", nn.initializers.normal(fan_in ** -0.5),
                        self.shape, jnp.dtype(self.param_dtype))
    return jnp.einsum(self.eqn, x, kernel.astype(x.dtype))


class RMSNorm(nn.Module):
  """x * rsqrt(mean(x^2) + eps) * scale, computed in float32.

  `scale` is used as stored (Gemma checkpoints in GGUF already hold 1 + w),
  so a fresh module starts at ones.
  """
  eps: float = 1e-6
  param_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],),
                       jnp.dtype(self.param_dtype))
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    normed = x32 * jax.lax.rsqrt(var + self.eps)
    return (normed * scale.astype(jnp.float32)).astype(x.dtype)


def apply_rope(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
  """Rotary embedding, split-half ("NeoX") layout as in Gemma.

  Args:
    x: [batch, T, heads, head_dim].
    positions: [batch, T] int32 absolute positions.
    base: maximum wavelength (1e4 local, 1e6 global in Gemma 3).
  Returns:
    x rotated by position, same shape and dtype.
  """
  head_dim = x.shape[-1]
  fraction = 2.0 * jnp.arange(head_dim // 2, dtype=jnp.float32) / head_dim
  timescale = base ** fraction                                   # [H/2]
  angle = positions[..., None].astype(jnp.float32) / timescale   # [B, T, H/2]
  angle = angle[:, :, None, :]                                   # [B, T, 1, H/2]
  sin, cos = jnp.sin(angle), jnp.cos(angle)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class FeedForward(nn.Module):
  """Gated GELU(tanh) MLP: down(gelu(gate(x)) * up(x))."""
  width: int
  hidden: int
  param_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    gate = Einsum((self.width, self.hidden), "btd,df->btf", self.param_dtype,
                  name="gate")(x)
    up = Einsum((self.width, self.hidden), "btd,df->btf", self.param_dtype,
                name="up")(x)
    h = jax.nn.gelu(gate, approximate=True) * up                 # [B, T, F]
    return Einsum((self.hidden, self.width), "btf,fd->btd", self.param_dtype,
                  name="down")(h)


class Embedder(nn.Module):
  """Token embedding, scaled by sqrt(width) on the way in, and the tied output
  projection on the way out."""
  vocab_size: int
  width: int
  param_dtype: str = "float32"

  def setup(self):
    self.input_embedding = self.param(
        "input_embedding", nn.initializers.normal(self.width ** -0.5),
        (self.vocab_size, self.width), jnp.dtype(self.param_dtype))

  def encode(self, tokens: jax.Array, dtype) -> jax.Array:
    """[batch, T] int32 -> [batch, T, width]."""
    x = jnp.take(self.input_embedding, tokens, axis=0).astype(dtype)
    return x * jnp.sqrt(jnp.asarray(self.width, jnp.float32)).astype(dtype)

  def decode(self, x: jax.Array) -> jax.Array:
    """[..., width] -> [..., vocab] logits in float32."""
    return jnp.einsum("...d,vd->...v", x,
                      self.input_embedding.astype(x.dtype),
                      preferred_element_type=jnp.float32)
