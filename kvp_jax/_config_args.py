"""Parsing a command line with ml_collections config flags, with errors that
name the file or the field.

On top of what config_flags does itself:

* `--config=missing.py`: a FlagsError naming the file (config_flags only
  fails later, on first use of the config, with a long traceback).
* `--config.train.nosuch=1`: a FlagsError naming the unknown field (config
  _flags raises a bare AttributeError("'nosuch'") from inside parsing).
* list fields, which config_flags cannot override: a bracketed value,
  `--config.eval.budgets=[32,64]` or `--config.eval.scorers=[knorm,kvp]`,
  replaces the list (elements take the type of the field's current ones).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from absl import flags
from ml_collections.config_flags import config_flags

_OVERRIDE = re.compile(r"^--?([A-Za-z_][\w]*)\.([\w.]+)(?:=(.*))?$", re.S)


class ConfigArgError(flags.Error):
  """A config flag names a missing file, an unknown field, or a bad value."""


def _config_flag_names(fv: flags.FlagValues) -> set[str]:
  return {name for name, flag in fv._flags().items()  # pylint: disable=protected-access
          if config_flags.is_config_flag(flag)}


def _split_list_overrides(argv: Sequence[str], names: set[str]):
  """(argv without list overrides, [(flag name, field path, text)])."""
  rest, lists = [], []
  for arg in argv:
    m = _OVERRIDE.match(arg)
    value = m.group(3) if m else None
    if (m and m.group(1) in names and value is not None
        and value.strip().startswith("[") and value.strip().endswith("]")):
      lists.append((m.group(1), m.group(2), value.strip()))
    else:
      rest.append(arg)
  return rest, lists


def _unknown_field_message(argv: Sequence[str], names: set[str],
                           error: Exception) -> str:
  missing = str(error.args[0] if error.args else error).strip("'\" ")
  for arg in argv:
    m = _OVERRIDE.match(arg)
    if m and m.group(1) in names and missing in m.group(2).split("."):
      path = m.group(2)
      parent = path.split(".")[:path.split(".").index(missing)]
      where = f"config.{'.'.join(parent)}" if parent else "the config"
      return (f"--{m.group(1)}.{path}: unknown config field {path!r} "
              f"({where} has no field {missing!r})")
  return f"unknown config field {missing!r}"


def _field(config, flag: str, path: str):
  """(parent ConfigDict, key) of `path`; ConfigArgError if absent."""
  parts = path.split(".")
  node = config
  for i, part in enumerate(parts):
    try:
      child = node[part]
    except (KeyError, TypeError, AttributeError):
      where = ".".join(parts[:i])
      raise ConfigArgError(
          f"--{flag}.{path}: unknown config field {path!r} "
          f"({'config.' + where if where else 'the config'} has no field "
          f"{part!r})") from None
    if i == len(parts) - 1:
      return node, part
    node = child
  raise AssertionError(path)


def _parse_list(text: str, current: Sequence[Any], where: str) -> list:
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    inner = text[1:-1].strip()
    value = [v.strip().strip("'\"") for v in inner.split(",")] if inner else []
  if not isinstance(value, list):
    raise ConfigArgError(f"{where}: {text!r} is not a list")
  kinds = {type(v) for v in current}
  if len(kinds) == 1 and (kind := kinds.pop()) in (int, float, str):
    try:
      value = [kind(v) for v in value]
    except (TypeError, ValueError):
      raise ConfigArgError(f"{where}: {text!r} is not a list of "
                           f"{kind.__name__}") from None
  return value


def _apply_list(config, flag: str, path: str, text: str) -> None:
  parent, key = _field(config, flag, path)
  current = parent[key]
  where = f"--{flag}.{path}"
  if not isinstance(current, (list, tuple)):
    raise ConfigArgError(f"{where}: config field {path!r} is a "
                         f"{type(current).__name__}, not a list; give it "
                         "without brackets")
  value = _parse_list(text, current, where)
  parent[key] = tuple(value) if isinstance(current, tuple) else value


def _check_loaded(fv: flags.FlagValues, name: str) -> None:
  """ConfigArgError naming the file if --name's config did not load
  (config_flags keeps the error in a stand-in that raises on first use)."""
  flag = fv[name]
  filename = str(config_flags.get_config_filename(flag))
  path = Path(filename.split(":", 1)[0])
  if not path.is_file():
    raise ConfigArgError(f"--{name}={filename}: config file {path} does not "
                         "exist")
  value = flag.value
  if type(value).__name__ == "_ErrorConfig":
    try:
      value.keys()  # Raises the stored load error.
    except Exception as e:  # pylint: disable=broad-except
      cause = e.__cause__ or e.__context__ or e
      raise ConfigArgError(f"--{name}={filename}: cannot load config file "
                           f"{path}: {type(cause).__name__}: {cause}") \
          from None


def parse(argv: Sequence[str], fv: flags.FlagValues = flags.FLAGS
          ) -> list[str]:
  """Parses argv into fv like fv(argv); returns the unparsed arguments.

  Raises:
    flags.Error (ConfigArgError for the config-specific cases above), with
    a message naming the flag, the file or the field.
  """
  names = _config_flag_names(fv)
  argv, lists = _split_list_overrides(argv, names)
  # config_flags reads the overrides from sys.argv, not from fv's argv.
  saved, sys.argv = sys.argv, list(argv)
  try:
    rest = fv(argv)
  except (AttributeError, KeyError) as e:
    raise ConfigArgError(_unknown_field_message(argv, names, e)) from None
  except flags.Error:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # Raised by the code of a config file while it loads.
    files = [a.split("=", 1)[1] for a in argv
             if a.split("=", 1)[0].lstrip("-") in names and "=" in a]
    raise ConfigArgError(f"cannot load config file {', '.join(files)}: "
                         f"{type(e).__name__}: {e}") from e
  finally:
    sys.argv = saved
  for name in sorted(names):
    if fv[name].present:
      _check_loaded(fv, name)
  for name, path, text in lists:
    if not fv[name].present or fv[name].value is None:
      raise ConfigArgError(f"--{name}.{path} needs --{name}=<config file> "
                           "before it")
    _apply_list(fv[name].value, name, path, text)
  return rest
