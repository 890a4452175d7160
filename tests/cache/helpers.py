"""A tiny GQA model with a sliding-window layer, a left-padded batch, and
decoding through any cache, shared by the eviction and allocation tests."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from kvp_jax import inference
from kvp_jax import model as model_lib

PROMPT = 48           # Prefill tokens (row 1 is left-padded by PAD).
PAD = 5
NEW = 8               # Tokens appended after the eviction: a chunk, then 1s.
WINDOW = 24           # Local layers: the window is crossed while decoding.


@functools.lru_cache(maxsize=None)
def tiny_model():
  """(config, params): 3 layers (local, local, global), 4 query heads on 2
  KV heads, window 24."""
  config = model_lib.tiny(sliding_window=WINDOW)
  params = jax.jit(functools.partial(model_lib.init_params, config))(
      jax.random.key(0))
  return config, params


def batch(seed=0):
  """tokens, positions [2, PROMPT + NEW]; context lengths [2] after the
  prompt."""
  config, _ = tiny_model()
  t = PROMPT + NEW
  rng = np.random.default_rng(seed)
  tokens = jnp.asarray(rng.integers(0, config.vocab_size, (2, t)), jnp.int32)
  pos = np.tile(np.arange(t, dtype=np.int32), (2, 1))
  pos[1] -= PAD
  pos[pos < 0] = -1
  return tokens, jnp.asarray(pos), jnp.asarray([PROMPT, PROMPT - PAD],
                                               jnp.int32)


def prefilled(window_rings, seed=0):
  """The prompt's cache, with room for NEW more tokens."""
  config, params = tiny_model()
  tokens, pos, ctx = batch(seed)
  caps = model_lib.layer_capacities(config, PROMPT + NEW,
                                    window_rings=window_rings)
  _, cache, _ = inference.prefill(config, params, tokens[:, :PROMPT],
                                  pos[:, :PROMPT], caps)
  return cache, ctx


def continue_logits(cache, seed=0):
  """Logits after appending a 3-token chunk then 5 single tokens: a list of
  [2, vocab] arrays (the tokens are the batch's, teacher-forced)."""
  config, params = tiny_model()
  tokens, pos, _ = batch(seed)
  out, start = [], PROMPT
  for size in (3, 1, 1, 1, 1, 1):
    stop = start + size
    logits, cache, _ = inference.extend(config, params, cache,
                                        tokens[:, start:stop],
                                        pos[:, start:stop])
    out.append(np.asarray(logits))
    start = stop
  return out
