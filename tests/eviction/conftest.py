"""The eviction tests' tiny model (a 16-token sliding window on its local
layers) and prompts of two lengths."""

import jax
import numpy as np
import pytest

from kvp_jax import model as model_lib


@pytest.fixture(scope="module")
def tiny():
  config = model_lib.tiny(sliding_window=16, vocab_size=64)
  params = model_lib.init_params(config, jax.random.key(0))
  return model_lib.Pretrained(config, params, None, "x", "random")


def prompts() -> list[list[int]]:
  """Two random prompts of 61 and 47 tokens."""
  rng = np.random.default_rng(7)
  return [list(rng.integers(3, 64, n)) for n in (61, 47)]
