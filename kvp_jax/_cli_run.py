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
* OSError: a missing file, a read-only directory, no space left (also
  when a library raises its own error caused by one: the disk's problem is
  named, with what to do).

Tracebacks stay off stderr: an uncaught exception of a background thread
(orbax saves checkpoints from threads) and a log record carrying a
traceback go to an error log (`ErrorLog`: <workdir>/errors.log, else a
file in the system's temporary directory), which the error line names.
A background thread that failed on a full or read-only disk fails the
command even when main returned (its work may be missing); other
background failures leave one `warning:` line.

Ctrl-C ends with "interrupted" and exit status 130 (rerun to continue).
Compiled programs persist on disk between runs (kvp_jax._compilation_cache).
With --debug the exception propagates with its traceback instead.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
import re
import sys
import tempfile
import threading
import time
import traceback
from typing import Callable, Iterator, NoReturn, Sequence

from absl import app
from absl import flags

from kvp_jax import _compilation_cache
from kvp_jax import _config_args

_PROJECT_PACKAGES = ("kvp_jax", "data_pipelines", "launch")
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
ERROR_LOG_NAME = "errors.log"

_KEPT = "rerun: finished work is kept"
_DISK_HINTS = {
    errno.ENOSPC: f"free some space and {_KEPT}",
    errno.EDQUOT: f"free some space and {_KEPT}",
    errno.EROFS: f"write elsewhere or make the disk writable, then {_KEPT}",
    errno.EACCES: f"fix the permissions or write elsewhere, then {_KEPT}",
}


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
      isinstance(e, Exception) and (_is_project_error(e)
                                    or disk_error(e) is not None))


def disk_error(e: BaseException) -> OSError | None:
  """The full, read-only or forbidden disk behind `e`: `e` itself or an
  OSError it was raised from (a library wrapping it), or None."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in _DISK_HINTS:
      return e
    e = e.__cause__ or e.__context__
  return None


def _disk_hint(e: BaseException) -> str | None:
  """What to do about the disk error behind `e` (also one that a library
  reports in its message only, as tensorstore does)."""
  found = disk_error(e)
  if found is not None:
    return _DISK_HINTS[found.errno]
  text = str(e)
  for code, hint in _DISK_HINTS.items():
    if os.strerror(code) in text:
      return hint
  return None


def _disk_text(text: str) -> str | None:
  """"<path>: No space left on device" from a library's long message that
  names the disk's error and quotes the path (tensorstore's), or None."""
  paths = re.findall(r'"([^"]*/[^"]*)"', text)
  for code in _DISK_HINTS:
    if os.strerror(code) in text and paths:
      return f"{paths[-1]}: {os.strerror(code)}"
  return None


def message(e: BaseException, log: "ErrorLog | None" = None) -> str:
  """The one-line description of a reported error; `log`: the error log,
  named when it holds tracebacks."""
  notes = [n for n in (_disk_hint(e), log and log.note()) if n]
  cause = disk_error(e)
  if cause is not None and not isinstance(e, OSError):
    e = cause                   # The disk's error, not the library's.
  if isinstance(e, OSError) and e.filename is not None and e.strerror:
    names = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "")
    text = f"{names}: {e.strerror}"
  else:
    text = _disk_text(str(e)) or str(e) or type(e).__name__
    if isinstance(e, KeyError):  # str(KeyError) is the quoted key alone.
      text = f"missing key {text}"
  if notes:
    text += f" ({'; '.join(notes)})"
  return one_line(text)


class ErrorLog:
  """Where tracebacks that must not reach stderr go.

  The first place that takes them: <workdir>/errors.log (when the command
  has a --workdir that exists), else a new file in the system's temporary
  directory, so that a full or read-only workdir still keeps them. Nothing
  is created before the first traceback.
  """

  def __init__(self):
    self.path: Path | None = None
    self.lost = 0                 # Tracebacks no place would take.
    self.thread_errors: list[BaseException] = []
    self.hidden_records = 0       # Error records kept off stderr.
    self._refused: set[Path] = set()
    self._temp: Path | None = None
    self._mutex = threading.Lock()

  def write(self, text: str) -> None:
    """Appends `text` (a traceback) to the first place that takes it."""
    with self._mutex:
      for path in self._places():
        try:
          with open(path, "a", encoding="utf-8") as f:
            if path != self.path:
              f.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} pid "
                      f"{os.getpid()}: {' '.join(sys.argv)}\n")
            f.write(text if text.endswith("\n") else text + "\n")
          self.path = path
          return
        except OSError:
          self._refused.add(path)
      self.lost += 1

  def note(self) -> str | None:
    """Where the tracebacks are, for the error line (None: there are
    none)."""
    if self.lost:
      return f"{self.lost} tracebacks could not be saved (the disk refused)"
    return f"tracebacks in {self.path}" if self.path else None

  def _places(self) -> Iterator[Path]:
    workdir = _flag_value("workdir")
    candidates = [self.path]
    if workdir and Path(workdir).is_dir():
      candidates.append(Path(workdir) / ERROR_LOG_NAME)
    candidates.append(self._temp_file())
    seen = set()
    for path in candidates:
      if path is not None and path not in self._refused and path not in seen:
        seen.add(path)
        yield path

  def _temp_file(self) -> Path | None:
    if self._temp is None:
      try:
        fd, name = tempfile.mkstemp(prefix="kvp_jax-errors-", suffix=".log")
        os.close(fd)
        self._temp = Path(name)
      except OSError:
        return None
    return self._temp

  def thread_hook(self, args) -> None:
    """threading.excepthook: the traceback to the log, not stderr."""
    if issubclass(args.exc_type, SystemExit):
      return
    name = args.thread.name if args.thread is not None else "?"
    self.thread_errors.append(args.exc_value)
    self.write(f"Exception in thread {name}:\n" + "".join(
        traceback.format_exception(args.exc_type, args.exc_value,
                                   args.exc_traceback)))

  def unraisable_hook(self, unraisable) -> None:
    """sys.unraisablehook (an exception in __del__, say): to the log."""
    self.write(f"{unraisable.err_msg or 'Exception ignored in'}: "
               f"{unraisable.object!r}\n" + "".join(
                   traceback.format_exception(unraisable.exc_type,
                                              unraisable.exc_value,
                                              unraisable.exc_traceback)))


class _TracebacksToLog(logging.Filter):
  """A log handler's filter: a record with a traceback has it written to
  the error log instead (the project's main thread's message still shows,
  without it); an error record of a background thread or of another
  library (orbax reporting its failed save) goes to the log alone: the
  command's own error line says what failed."""

  _FORMAT = logging.Formatter(
      "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s")

  def __init__(self, log: ErrorLog):
    super().__init__()
    self._log = log

  def filter(self, record: logging.LogRecord) -> bool:
    hidden = record.levelno >= logging.ERROR and (
        threading.current_thread() is not threading.main_thread()
        or not _in_project(record.pathname))
    if not (hidden or record.exc_info or record.exc_text):
      return True
    if not getattr(record, "_kvp_logged", False):
      record._kvp_logged = True            # Once, whatever the handlers.
      self._log.write(self._FORMAT.format(record))
      self._log.hidden_records += hidden
    record.exc_info = record.exc_text = None
    return not hidden


def _in_project(source: str) -> bool:
  """Whether a source file is the project's (not a library's)."""
  root = Path(__file__).resolve().parents[1]
  try:
    top = Path(source).resolve().relative_to(root).parts[0]
  except (ValueError, IndexError, OSError):
    return False
  return top in _PROJECT_PACKAGES


def _flag_value(name: str):
  return flags.FLAGS[name].value if name in flags.FLAGS else None


def _keep_tracebacks_off_stderr() -> ErrorLog:
  """Sends background threads' tracebacks and logged ones to an ErrorLog
  (for the rest of the process)."""
  log = ErrorLog()
  threading.excepthook = log.thread_hook
  sys.unraisablehook = log.unraisable_hook
  for handler in logging.getLogger().handlers:
    handler.addFilter(_TracebacksToLog(log))
  return log


def _after_main(log: ErrorLog) -> None:
  """Background threads that failed while main succeeded: on a disk error
  the command fails (its work may be missing); those and error records
  kept off stderr otherwise leave one warning line."""
  for e in log.thread_errors:
    if _disk_hint(e):
      fail("a background thread failed: " + message(e, log))
  problems = [f"{n} {what}" for n, what in (
      (len(log.thread_errors), "background thread(s) failed"),
      (log.hidden_records, "error(s) logged")) if n]
  if problems:
    print(f"warning: {', '.join(problems)} ({log.note()})", file=sys.stderr,
          flush=True)


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
    log = None if flags.FLAGS["debug"].value else (
        _keep_tracebacks_off_stderr())
    try:
      _compilation_cache.enable()     # After --help, before any compile.
      result = main(argv)
      if log is not None:
        _after_main(log)
      return result
    except KeyboardInterrupt:
      if flags.FLAGS["debug"].value:
        raise
      print("error: interrupted (rerun the same command to continue)",
            file=sys.stderr, flush=True)
      sys.exit(EXIT_INTERRUPTED)
    except Exception as e:  # pylint: disable=broad-except
      if log is None or not is_reported(e):
        raise
      if log.path is not None or log.lost or _disk_hint(e):
        log.write("".join(traceback.format_exception(e)))  # All of it.
      fail(message(e, log))
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
