"""One KV Policy agent: an MLP that scores cached tokens from (k, v, position).

Method section 3 (arXiv 2602.10238): for every cached token j of one
(layer, KV head), with nothing but its cached key k_j, value v_j and position,

    k' = LN(Dense(feature_width)(k_j))
    v' = LN(Dense(feature_width)(v_j))
    p' = LN(Embed(max_position, position_dim)(min(pos_j, max_position - 1)))
        (position_mode "absolute"; "relative": the age; "depth", "log_age",
        "depth_log_age": the length-free buckets below)
    c' = LN(Dense(feature_width)(u_j - a)), cos(u_j, a)       # use_key_contrast
    h  = concat(enabled features)
    h  = silu(LN(Dense(hidden)(h)))          # num_mlp_layers times
    s_j = Dense(1)(h)                        # higher = keep

Tokens are scored independently of each other (no attention between slots),
so sorting the scores once serves every budget.

Beyond the paper, `use_key_contrast` adds one statistic of the whole cache:
the anchor a, the mean of the unit keys u_j = k_j / |k_j| over the head's
cached tokens (KeyDiff's anchor). The anchor's set is, in training and at
inference alike, the slots the cache holds when it is evicted: every
cached token, the protected sinks and recent tokens included, and on a
sliding-window layer only the ring's last `window` tokens (training:
`held` of kvp_jax.training's agent_inputs; inference: the cache's valid
slots). It is wider than the ranked set (the protected tokens are held but
never ranked). A token's contrast u_j - a and its cosine
to a tell how distinctive its key is in this context (a needle in a
repetitive haystack), which a per-token MLP cannot see from k_j alone. It
still reads nothing but the cached keys: no queries, no attention.

Positions past the trained range: the absolute position and the age are
clamped to the largest ones training ranked (an agent never reads an
untrained row), so at 16k every token older than the trained 2k looks the
same to them. Beyond the paper, two position features that do not depend on
the context's length: the token's depth, floor(num_depth_buckets * pos / L)
(L the tokens seen so far: the same buckets at 1k and at 32k), and its
log-scaled age, floor(LOG_AGE_STEPS * log2(1 + age)) (a bucket per quarter
doubling: ages 2k..32k take 16 buckets where linear rows take 30k; clamped
to the bucket of the largest trained age).

Numerics: parameters are float32; the MLP runs in `AgentConfig.dtype`
(bfloat16 by default; LayerNorm statistics are reduced in float32 by flax);
the final Dense(1) runs in float32 so that scores of thousands of tokens do
not collapse onto bfloat16's 8-bit mantissa and tie. Scores are float32.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ABSOLUTE = "absolute"
RELATIVE = "relative"
BOTH = "both"
DEPTH = "depth"
LOG_AGE = "log_age"
DEPTH_LOG_AGE = "depth_log_age"
POSITION_MODES = (ABSOLUTE, RELATIVE, BOTH, DEPTH, LOG_AGE, DEPTH_LOG_AGE)
# Log-age buckets per doubling of the age, and the table's rows (ages up to
# 2^20 tokens).
LOG_AGE_STEPS = 4
LOG_AGE_ROWS = LOG_AGE_STEPS * 20 + 1
_EPS = 1e-8


@dataclasses.dataclass(frozen=True)
class AgentConfig:
  """Architecture of one agent (all agents of a model share it).

  Attributes:
    hidden: width of the MLP layers.
    feature_width: width of the key and value projections.
    position_dim: width of each position embedding.
    max_position: rows of each position embedding; larger positions/ages are
      clipped to max_position - 1 (negative ones to 0).
    trained_max_position / trained_max_age: the largest position and age
      the training traces ranked (recorded by the export; None: unknown,
      e.g. an older artifact or during training). Rows past them were never
      updated by training, so larger positions / ages are clipped to them
      as well: an agent never reads an untrained embedding row.
    num_mlp_layers: number of silu(LN(Dense(hidden))) layers.
    use_keys / use_values / use_position: feature switches (ablations); at
      least one must be on.
    use_key_contrast: also feed each key's contrast to the mean unit key of
      the cache and its cosine to it (beyond the paper; see the module
      docstring).
    position_mode: "absolute" embeds the token's absolute position pos;
      "relative" embeds its age, context_length - 1 - pos (known at
      inference when eviction happens; what matters for sliding-window
      layers); "both" concatenates the two embeddings (separate tables);
      "depth" embeds the depth bucket (depth_bucket), "log_age" the
      log-age bucket (log_age_bucket), "depth_log_age" both: features that
      mean the same at every context length.
    num_depth_buckets: rows of the depth embedding.
    dtype: compute dtype of the MLP ("bfloat16" or "float32"). Parameters
      are always float32, scores always float32.
  """
  hidden: int = 256
  feature_width: int = 256
  position_dim: int = 32
  max_position: int = 6000
  num_mlp_layers: int = 2
  use_keys: bool = True
  use_values: bool = True
  use_position: bool = True
  use_key_contrast: bool = False
  position_mode: str = ABSOLUTE
  num_depth_buckets: int = 64
  dtype: str = "bfloat16"
  trained_max_position: int | None = None
  trained_max_age: int | None = None

  def __post_init__(self):
    if self.position_mode not in POSITION_MODES:
      raise ValueError(f"position_mode must be one of {POSITION_MODES}, got "
                       f"{self.position_mode!r}")
    if not (self.use_keys or self.use_values or self.use_position):
      raise ValueError("an agent needs at least one of keys, values, position")
    if self.num_mlp_layers < 0:
      raise ValueError(
          f"num_mlp_layers must be >= 0, got {self.num_mlp_layers}")
    if self.num_depth_buckets < 1:
      raise ValueError(f"num_depth_buckets must be >= 1, got "
                       f"{self.num_depth_buckets}")
    if self.max_position < 1:
      raise ValueError(f"max_position must be >= 1, got {self.max_position}")
    for name in ("trained_max_position", "trained_max_age"):
      value = getattr(self, name)
      if value is not None and (isinstance(value, bool) or
                                not isinstance(value, int) or value < 0):
        raise ValueError(f"{name} must be None or an int >= 0, got "
                         f"{value!r}")
    jnp.dtype(self.dtype)  # Raises on an unknown dtype name.

  @property
  def uses_absolute(self) -> bool:
    return self.use_position and self.position_mode in (ABSOLUTE, BOTH)

  @property
  def uses_relative(self) -> bool:
    return self.use_position and self.position_mode in (RELATIVE, BOTH)

  @property
  def uses_depth(self) -> bool:
    return self.use_position and self.position_mode in (DEPTH, DEPTH_LOG_AGE)

  @property
  def uses_log_age(self) -> bool:
    return self.use_position and self.position_mode in (LOG_AGE,
                                                        DEPTH_LOG_AGE)

  def replace(self, **changes: Any) -> "AgentConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "AgentConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
      raise ValueError(f"unknown AgentConfig fields {sorted(unknown)}")
    return cls(**d)


def key_contrast(keys: jax.Array, valid: jax.Array
                 ) -> tuple[jax.Array, jax.Array]:
  """Each key against the mean unit key of the cached tokens.

  Args:
    keys: [..., T, H] cached keys (e.g. [B, T, H] for one agent).
    valid: [..., T] bool, slots holding a token.
  Returns:
    contrast [..., T, H] = u_j - a and cosine [..., T] = cos(u_j, a),
    float32, where u_j = k_j / |k_j| and a = mean of u over the valid slots
    of each row; zero at empty slots.
  """
  k = keys.astype(jnp.float32)
  mask = valid[..., None]
  unit = jnp.where(mask, k / jnp.maximum(
      jnp.linalg.norm(k, axis=-1, keepdims=True), _EPS), 0.0)
  count = jnp.maximum(jnp.sum(mask, axis=-2), 1)                  # [..., 1]
  anchor = jnp.sum(unit, axis=-2) / count                         # [..., H]
  direction = anchor / jnp.maximum(
      jnp.linalg.norm(anchor, axis=-1, keepdims=True), _EPS)
  cosine = jnp.einsum("...th,...h->...t", unit, direction,
                      precision="highest")
  contrast = jnp.where(mask, unit - anchor[..., None, :], 0.0)
  return contrast, jnp.where(valid, cosine, 0.0)


def token_age(positions: jax.Array, context_length: jax.Array) -> jax.Array:
  """Age of each cached token: context_length - 1 - pos (0 = newest).

  Args:
    positions: [..., T] int32 absolute positions.
    context_length: [...] int32 number of tokens seen so far (the position of
      the next token to be written).
  Returns:
    [..., T] int32 ages (not clipped).
  """
  return context_length[..., None].astype(jnp.int32) - 1 - positions


def depth_bucket(positions: jax.Array, context_length: jax.Array,
                 num_buckets: int) -> jax.Array:
  """Depth of each cached token in the context, in num_buckets equal parts:
  floor(num_buckets * pos / context_length), in [0, num_buckets - 1].

  Args:
    positions: [..., T] int32 absolute positions.
    context_length: [...] int32 tokens seen so far.
  Returns:
    [..., T] int32 buckets (0: the first tokens).
  """
  length = jnp.maximum(context_length.astype(jnp.int32), 1)[..., None]
  pos = jnp.clip(positions.astype(jnp.int32), 0, length - 1)
  # pos * num_buckets in int32: exact below 2^31 / num_buckets positions.
  return (pos * num_buckets) // length


def log_age_bucket(age: jax.Array) -> jax.Array:
  """floor(LOG_AGE_STEPS * log2(1 + age)) of ages >= 0 (negative: 0), in
  [0, LOG_AGE_ROWS - 1]: [..., T] int32.

  Exact at every power of two (no float log): with x = 1 + age = m 2^k,
  1 <= m < 2, k is x's bit length - 1 and the step within the doubling
  counts the thresholds 2^(i / LOG_AGE_STEPS) that m reaches (x below 2^24,
  so m is exact in float32).
  """
  x = jnp.clip(age, 0, (1 << 24) - 2).astype(jnp.int32) + 1
  k = 31 - jax.lax.clz(x)                                   # floor(log2 x)
  m = jnp.ldexp(x.astype(jnp.float32), -k)                  # [1, 2)
  steps = sum((m >= np.float32(2.0 ** (i / LOG_AGE_STEPS))).astype(jnp.int32)
              for i in range(1, LOG_AGE_STEPS))
  return jnp.minimum(LOG_AGE_STEPS * k + steps, LOG_AGE_ROWS - 1)


class Agent(nn.Module):
  """Scores the cached tokens of one (layer, KV head).

  Call: (keys [B, T, H], values [B, T, H], positions [B, T] int32,
  valid [B, T] bool, context_length [B] int32, held [B, T] bool or None)
  -> scores [B, T] float32, -inf where not valid. `held` (default: valid)
  is the key-contrast anchor's set, a superset of valid (module docstring).
  """
  config: AgentConfig

  def _embed_position(self, index: jax.Array, name: str) -> jax.Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    trained = (cfg.trained_max_position if name == "position"
               else cfg.trained_max_age)
    top = cfg.max_position - 1 if trained is None else min(
        trained, cfg.max_position - 1)
    index = jnp.clip(index, 0, top)
    x = nn.Embed(cfg.max_position, cfg.position_dim, dtype=dtype,
                 param_dtype=jnp.float32, name=f"{name}_embed")(index)
    return nn.LayerNorm(dtype=dtype, name=f"{name}_norm")(x)   # [B, T, Dp]

  def _embed_bucket(self, index: jax.Array, rows: int, top: int | jax.Array,
                    name: str) -> jax.Array:
    """A bucket's embedding (a table of `rows`; buckets above `top`, never
    trained, read row `top`)."""
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    x = nn.Embed(rows, cfg.position_dim, dtype=dtype,
                 param_dtype=jnp.float32, name=f"{name}_embed")(
                     jnp.clip(index, 0, top))
    return nn.LayerNorm(dtype=dtype, name=f"{name}_norm")(x)   # [B, T, Dp]

  @nn.compact
  def __call__(self, keys: jax.Array, values: jax.Array,
               positions: jax.Array, valid: jax.Array,
               context_length: jax.Array,
               held: jax.Array | None = None) -> jax.Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    valid = valid.astype(bool)
    held = valid if held is None else held.astype(bool)
    anchor_keys = jnp.where(held[..., None], keys, 0).astype(dtype)
    # Zero the padding so garbage in empty slots cannot reach the gradients.
    keys = jnp.where(valid[..., None], keys, 0).astype(dtype)      # [B, T, H]
    values = jnp.where(valid[..., None], values, 0).astype(dtype)  # [B, T, H]
    positions = jnp.where(valid, positions, 0).astype(jnp.int32)   # [B, T]

    features = []
    if cfg.use_keys:
      k = nn.Dense(cfg.feature_width, dtype=dtype, name="key_proj")(keys)
      features.append(nn.LayerNorm(dtype=dtype, name="key_norm")(k))
    if cfg.use_values:
      v = nn.Dense(cfg.feature_width, dtype=dtype, name="value_proj")(values)
      features.append(nn.LayerNorm(dtype=dtype, name="value_norm")(v))
    if cfg.use_key_contrast:
      contrast, cosine = key_contrast(anchor_keys, held)
      c = nn.Dense(cfg.feature_width, dtype=dtype, name="contrast_proj")(
          contrast.astype(dtype))
      features.append(nn.LayerNorm(dtype=dtype, name="contrast_norm")(c))
      features.append(cosine[..., None].astype(dtype))
    if cfg.uses_absolute:
      features.append(self._embed_position(positions, "position"))
    if cfg.uses_relative:
      age = token_age(positions, context_length)
      features.append(self._embed_position(age, "age"))
    if cfg.uses_depth:
      features.append(self._embed_bucket(
          depth_bucket(positions, context_length, cfg.num_depth_buckets),
          cfg.num_depth_buckets, cfg.num_depth_buckets - 1, "depth"))
    if cfg.uses_log_age:
      top = LOG_AGE_ROWS - 1 if cfg.trained_max_age is None else (
          log_age_bucket(jnp.asarray(cfg.trained_max_age)))
      features.append(self._embed_bucket(
          log_age_bucket(token_age(positions, context_length)),
          LOG_AGE_ROWS, top, "log_age"))
    h = jnp.concatenate(features, axis=-1)                   # [B, T, F]

    for i in range(cfg.num_mlp_layers):
      h = nn.Dense(cfg.hidden, dtype=dtype, name=f"mlp_{i}")(h)
      h = nn.silu(nn.LayerNorm(dtype=dtype, name=f"mlp_norm_{i}")(h))

    score = nn.Dense(1, dtype=jnp.float32, name="score")(
        h.astype(jnp.float32))[..., 0]                        # [B, T]
    return jnp.where(valid, score, -jnp.inf)
