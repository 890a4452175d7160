"""Shared fixtures: the shipped model (converted once per machine) and tiny
random models."""

import os

from absl import flags
import jax
import pytest

# Libraries that read absl flags (grain's worker processes) need them parsed;
# pytest owns the command line, so take every flag's default.
flags.FLAGS.mark_as_parsed()

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def gemma():
  """The shipped Gemma 3 270M in float32 (conversion is cached on disk)."""
  from kvp_jax import model
  return model.load_pretrained()


@pytest.fixture(scope="session")
def tokenizer():
  from kvp_jax import model
  return model.load_tokenizer()
