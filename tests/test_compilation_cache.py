"""The command lines keep compiled programs in JAX's disk cache."""

import os
import subprocess
import sys
from pathlib import Path

from kvp_jax import _compilation_cache

REPO = Path(__file__).resolve().parents[1]

_MAIN = """
import jax, jax.numpy as jnp
from kvp_jax import _cli_run
def main(argv):
  print(float(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).sum()))
_cli_run.run(main)
"""


def _run(env):
  # Without the test run's own JAX_COMPILATION_CACHE_DIR (conftest.py),
  # which the command lines would leave to JAX.
  base = {k: v for k, v in os.environ.items()
          if k != "JAX_COMPILATION_CACHE_DIR"}
  return subprocess.run(
      [sys.executable, "-c", _MAIN], cwd=REPO, capture_output=True,
      text=True, timeout=300,
      env=dict(base, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1", **env))


def test_a_command_line_writes_and_rereads_its_compiled_programs(tmp_path):
  env = {"KVP_COMPILATION_CACHE": str(tmp_path / "xla")}
  first = _run(env)
  assert first.returncode == 0, first.stderr[-2000:]
  files = sorted(p.name for p in (tmp_path / "xla").iterdir())
  assert any(name.startswith("jit__lambda") for name in files), files
  second = _run(env)                    # Same programs: read, not added.
  assert second.returncode == 0 and second.stdout == first.stdout
  assert sorted(p.name for p in (tmp_path / "xla").iterdir()) == files


def test_where_the_cache_goes(monkeypatch, tmp_path):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.setenv("KVP_COMPILATION_CACHE", "off")
  assert _compilation_cache.cache_dir() is None
  monkeypatch.delenv("KVP_COMPILATION_CACHE")
  monkeypatch.setenv("KVP_JAX_CACHE", str(tmp_path))
  assert _compilation_cache.cache_dir() == tmp_path / "xla"
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
  assert _compilation_cache.cache_dir() is None     # JAX's own setting.
