"""The full-size Gemma 3 270M decoder, by shape only (jax.eval_shape: no
weights, no FLOPs), against the shipped GGUF's own tensor table."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from kvp_jax import inference
from kvp_jax import model as model_lib
from kvp_jax.model import _gguf


def test_params_match_the_gguf_tensor_table():
  config = model_lib.gemma3_270m()
  shapes = jax.eval_shape(functools.partial(model_lib.init_params, config),
                          jax.random.key(0))
  leaves = jax.tree_util.tree_leaves(shapes)
  reader = _gguf.open_gguf(_gguf.default_gguf_path())
  assert len(leaves) == len(reader.tensors) == 236
  total = sum(math.prod(x.shape) for x in leaves)
  assert total == sum(int(np.prod(t.shape)) for t in reader.tensors)
  assert total == 268_098_176


def test_prefill_shapes_at_1k():
  config = model_lib.gemma3_270m()
  params = jax.eval_shape(functools.partial(model_lib.init_params, config),
                          jax.random.key(0))
  t = 1024
  caps = model_lib.layer_capacities(config, t + 64)
  tokens = jax.ShapeDtypeStruct((2, t), jnp.int32)
  logits, cache, captured = jax.eval_shape(
      functools.partial(inference.prefill, config, capacities=caps),
      params, tokens, tokens)
  assert logits.shape == (2, 262_144)
  assert captured is None
  assert len(cache.layers) == 18
  for i, layer in enumerate(cache.layers):
    want = t + 64 if i in (5, 11, 17) else 512      # Global vs 512-window.
    assert layer.k.shape == (2, 1, want, 256), i
    assert layer.pos.shape == (2, 1, want), i
    assert config.layer_window(i) == (None if i in (5, 11, 17) else 512)
