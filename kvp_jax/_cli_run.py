"""The one wrapper every command line runs under: `run(main)`.

`run(main)` replaces `absl.app.run(main)`. It parses the flags (config
files and overrides through kvp_jax._config_args) and runs main; an error
that is the input's or the machine's, not a bug of the code, ends the
process with ONE line on stderr, `error: <what went wrong>`, and exit
status 2:

* flag and config errors (an unknown flag or config field, a bad value, a
  config file that does not exist);
* the project's own errors (StoreError, GGUFError, SampleError,
  ArtifactError, LockError, TrainingDiverged, ...: any exception class
  defined in kvp_jax, data_pipelines or launch) and ValueError, which the
  library raises for bad input with a message naming it;
* OSError: a missing file, a read-only directory, no space left.

Ctrl-C ends with "interrupted" and exit status 130 (rerun to continue).
Compiled programs persist on disk between runs (kvp_jax._compilation_cache).
With --debug the exception propagates with its traceback instead.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Callable, NoReturn, Sequence

from absl import app
from absl import flags

from kvp_jax import _compilation_cache
from kvp_jax import _config_args

_PROJECT_PACKAGES = ("kvp_jax", "data_pipelines", "launch")
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def fail(message: str) -> NoReturn:
  """Prints `error: message` on one line and exits with status 2 (for bad
  input, not bugs)."""
  print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
  sys.exit(EXIT_BAD_INPUT)


def one_line(text: str) -> str:
  return " ".join(str(text).split())


def _is_project_error(e: BaseException) -> bool:
  return any(c.__module__.split(".")[0] in _PROJECT_PACKAGES
             for c in type(e).__mro__)


def is_reported(e: BaseException) -> bool:
  """Whether `e` is bad input or a failing machine (one line), not a bug."""
  return isinstance(e, (flags.Error, ValueError, OSError)) or (
      _is_project_error(e) and isinstance(e, Exception))


def message(e: BaseException) -> str:
  """The one-line description of a reported error."""
  if isinstance(e, OSError) and e.filename is not None and e.strerror:
    names = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "")
    text = f"{names}: {e.strerror}"
    if e.errno == errno.ENOSPC:
      text += " (free some space and rerun: finished work is kept)"
    return one_line(text)
  text = str(e) or type(e).__name__
  if isinstance(e, KeyError):  # str(KeyError) is the quoted key alone.
    text = f"missing key {text}"
  return one_line(text)


def _wants_debug(argv: Sequence[str]) -> bool:
  return any(a in ("--debug", "-debug", "--debug=true", "--debug=True",
                   "--debug=1") for a in argv)


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return _config_args.parse(argv)
  except flags.Error as e:
    if _wants_debug(argv):
      raise
    fail(message(e))


def _guarded(main: Callable[[list[str]], object]):
  def wrapped(argv):
    try:
      _compilation_cache.enable()     # After --help, before any compile.
      return main(argv)
    except KeyboardInterrupt:
      if flags.FLAGS["debug"].value:
        raise
      print("error: interrupted (rerun the same command to continue)",
            file=sys.stderr, flush=True)
      sys.exit(EXIT_INTERRUPTED)
    except Exception as e:  # pylint: disable=broad-except
      if flags.FLAGS["debug"].value or not is_reported(e):
        raise
      fail(message(e))
  return wrapped


def run(main: Callable[[list[str]], object],
        argv: Sequence[str] | None = None) -> None:
  """absl.app.run(main) with one-line errors (see the module docstring)."""
  if "debug" not in flags.FLAGS:
    flags.DEFINE_bool("debug", False, "Show the traceback of an error "
                      "instead of one line.")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  app.run(_guarded(main), argv=list(argv) if argv is not None else None,
          flags_parser=_parse_flags)
