"""Shared fixtures: the shipped model (converted once per machine) and tiny
random models."""

import os
import shutil
import tempfile

# One persistent XLA compilation cache per test run: they compile the same
# tiny programs many times. The pytest controller sets it before jax is
# imported; its xdist workers and every process they start (sweeps,
# multi-process jobs, CLIs) inherit it through the environment. A cache the
# caller set up is used and left alone.
_OWN_CACHE = os.path.join(tempfile.gettempdir(),
                          f"kvp_jax_tests_xla_cache_{os.getpid()}")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _OWN_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

from absl import flags  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

# Libraries that read absl flags (grain's worker processes) need them parsed;
# pytest owns the command line, so take every flag's default.
flags.FLAGS.mark_as_parsed()

jax.config.update("jax_default_matmul_precision", "highest")


def pytest_sessionfinish(session):
  """The controller (not an xdist worker) removes the run's XLA cache."""
  if (not hasattr(session.config, "workerinput") and
      os.environ["JAX_COMPILATION_CACHE_DIR"] == _OWN_CACHE):
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def gemma():
  """The shipped Gemma 3 270M in float32 (conversion is cached on disk)."""
  from kvp_jax import model
  return model.load_pretrained()


@pytest.fixture(scope="session")
def tokenizer():
  from kvp_jax import model
  return model.load_tokenizer()
