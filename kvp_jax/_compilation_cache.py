"""JAX's persistent compilation cache for the command lines.

Compiling the 18-layer decoder's programs (prefill, compression, the decode
loop, teacher-forced scoring) takes tens of seconds each on a CPU: an
evaluation grid of 55 (scorer, budget) cells spends over half an hour
compiling before its first batch, again at every restart. Every command
line therefore keeps its compiled programs in JAX's own disk cache
(https://docs.jax.dev/en/latest/persistent_compilation_cache.html), so a
rerun, a resumed job or the next grid with the same shapes loads them.

Where: $KVP_COMPILATION_CACHE, else <the default model cache>/xla
($KVP_JAX_CACHE/xla, else ~/.cache/kvp_jax/xla; a --model_cache_dir flag
does not move it); KVP_COMPILATION_CACHE=off turns it off. JAX's own
JAX_COMPILATION_CACHE_DIR, when set, is left to JAX. Only programs that
took >= 1 s to compile are kept (JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS
overrides). A cached program is the same executable, so results do not
change. The cache is trusted code: keep it in a directory only you can
write.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "KVP_COMPILATION_CACHE"
_MIN_COMPILE_TIME_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"


def cache_dir() -> Path | None:
  """The directory the command lines use (None: off, or JAX's own)."""
  where = os.environ.get(ENV, "")
  if where.lower() == "off" or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return None
  if where:
    return Path(where)
  from kvp_jax.model import _pretrained  # pylint: disable=g-import-not-at-top
  return _pretrained.default_cache_dir() / "xla"


def enable() -> Path | None:
  """Turns the cache on for this process (before its first compilation);
  returns its directory, or None when off."""
  path = cache_dir()
  if path is None:
    return None
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", str(path))
  if not os.environ.get(_MIN_COMPILE_TIME_ENV):
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  return path
