"""Shared fixtures: the shipped model (converted once per machine) and tiny
random models."""

import os

import jax
import pytest

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
