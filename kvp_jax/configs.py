"""Typed config sections: frozen dataclasses <-> ml_collections ConfigDicts.

An experiment config is an ml_collections ConfigDict (so every field can be
overridden from the command line); a stage reads its section once into a
frozen dataclass, which names what the section may hold, with what types:

  tc = configs.from_config_dict(TrainConfig, config, section="train")
  section = configs.to_config_dict(TrainConfig())   # the defaults

Supported field types: bool, int, float (an int is accepted and converted),
str, tuple[X, ...] (from a list or tuple), Optional[X] of those, and Any.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping, TypeVar

import ml_collections

T = TypeVar("T")


def _type_name(hint) -> str:
  return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _optional_of(hint):
  """X for Optional[X] (or X | None), else None."""
  origin = typing.get_origin(hint)
  if origin in (typing.Union, types.UnionType):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) == 1 and len(typing.get_args(hint)) == 2:
      return args[0]
  return None


def _coerce(name: str, value: Any, hint) -> Any:
  """value as a `hint`; ValueError naming `name` when it is not one."""
  inner = _optional_of(hint)
  if inner is not None:
    return None if value is None else _coerce(name, value, inner)
  if hint is Any:
    return value

  def bad():
    return ValueError(f"{name}: expected {_type_name(hint)}, got "
                      f"{type(value).__name__} {value!r}")

  if hint is bool:
    if not isinstance(value, bool):
      raise bad()
    return value
  if hint is int:
    if isinstance(value, bool) or not isinstance(value, int):
      raise bad()
    return int(value)
  if hint is float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise bad()
    return float(value)
  if hint is str:
    if not isinstance(value, str):
      raise bad()
    return value
  if typing.get_origin(hint) is tuple:
    if not isinstance(value, (list, tuple)):
      raise bad()
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(_coerce(f"{name}[{i}]", v, args[0])
                   for i, v in enumerate(value))
    if len(args) != len(value):
      raise bad()
    return tuple(_coerce(f"{name}[{i}]", v, a)
                 for i, (v, a) in enumerate(zip(value, args)))
  return value


def from_config_dict(cls: type[T], config: Mapping[str, Any] | None,
                     section: str | None = None, *,
                     prefix: str | None = None) -> T:
  """The dataclass `cls` of a config section, every field checked.

  Args:
    cls: a dataclass; its fields' type hints say what each field may hold.
    config: the whole config (with `section`) or the section itself; a
      ConfigDict or a plain mapping.
    section: the section's name, also the prefix of error messages.
    prefix: the prefix of error messages, when not config.<section> (e.g.
      "config.eval.suites[0]" for an entry of a list).
  Returns:
    cls(**fields): fields the section omits take the dataclass's defaults.
  Raises:
    ValueError naming the field ("config.train.nosuch: unknown field; known:
    ...") for an unknown, ill-typed or missing field (or a missing section).
  """
  if prefix is None:
    prefix = f"config.{section}" if section else "config"
  if section is not None:
    if config is None or section not in config:
      raise ValueError(f"{prefix}: missing section")
    config = config[section]
  if config is None:
    config = {}
  values = dict(config.items())
  hints = typing.get_type_hints(cls)
  fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ValueError(f"{prefix}.{unknown[0]}: unknown field; known: "
                     + ", ".join(sorted(fields)))
  kwargs = {}
  for name, field in fields.items():
    if name in values:
      kwargs[name] = _coerce(f"{prefix}.{name}", values[name], hints[name])
    elif (field.default is dataclasses.MISSING
          and field.default_factory is dataclasses.MISSING):
      raise ValueError(f"{prefix}.{name}: missing field")
  return cls(**kwargs)


def to_config_dict(instance: Any) -> ml_collections.ConfigDict:
  """A dataclass instance as a ConfigDict section.

  Optional[X] fields become FieldReference(value, field_type=X), so that a
  command-line override can set a field whose default is None; tuples stay
  tuples.
  """
  hints = typing.get_type_hints(type(instance))
  out = {}
  for field in dataclasses.fields(instance):
    value = getattr(instance, field.name)
    inner = _optional_of(hints[field.name])
    if inner is not None:
      value = ml_collections.FieldReference(
          value, field_type=typing.get_origin(inner) or inner)
    out[field.name] = value
  return ml_collections.ConfigDict(out)


def parse_config_arg(arg: str | None, **defaults: Any) -> dict[str, Any]:
  """The argument of a config file (`--config=FILE.py:ARG`, big_vision
  style) as {name: value}: ARG is `name=value` pairs separated by commas,
  and a comma-separated part without "=" adds one more item to the list
  before it, so `points=a,b,suites=ruler` gives points ["a", "b"] and
  suites ["ruler"].

  Args:
    arg: the text after the file's ":" (None or "": every default).
    **defaults: every accepted name and its default: a list or tuple (the
      value is a list of str), a str, an int or a bool.
  Returns:
    The defaults, updated from `arg`.
  Raises:
    ValueError naming the unknown name, the value that is not of its
    default's type, or a list given where one value goes.
  """
  values: dict[str, list[str]] = {}
  last = None
  for part in (arg or "").split(","):
    part = part.strip()
    if not part:
      continue
    if "=" in part:
      last, text = (s.strip() for s in part.split("=", 1))
      if last not in defaults:
        raise ValueError(f"config argument {last!r} is unknown; known: "
                         f"{', '.join(defaults) or 'none'}")
      values[last] = [text] if text else []
    elif last is None:
      raise ValueError(f"config argument {part!r} has no name (expected "
                       "name=value)")
    else:
      values[last].append(part)
  out = dict(defaults)
  for name, items in values.items():
    default = defaults[name]
    if isinstance(default, (list, tuple)):
      out[name] = items
      continue
    if len(items) != 1:
      raise ValueError(f"config argument {name!r} takes one value, got "
                       f"{','.join(items)!r}")
    text = items[0]
    if isinstance(default, bool):
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"config argument {name}={text!r} is not a bool")
      out[name] = text.lower() in ("true", "1")
    elif isinstance(default, int):
      try:
        out[name] = int(text)
      except ValueError:
        raise ValueError(f"config argument {name}={text!r} is not an "
                         "int") from None
    else:
      out[name] = text
  return out
