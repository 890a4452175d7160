"""A training run's directory and its config.json.

config.json is written once the run's checks have passed, and a workdir
that already holds a run resumes only with the same training config: the
sections that decide what is trained (model, traces, policy, input, train),
less the fields that only say where or how far this invocation goes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kvp_jax import _files

CONFIG_FILE = "config.json"
TRAINING_SECTIONS = ("model", "traces", "policy", "input", "train")
# Fields a resumed run may change: how far this invocation goes, and where
# the converted model is cached.
RESUMABLE_FIELDS = ("train.stop_after", "model.cache_dir")


class ConfigMismatch(ValueError):
  """A workdir that holds a run of another config."""


def _flatten(tree: Any, prefix: str) -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return out
  return {prefix: tree}


def config_differences(old: dict, new: dict,
                       defaults: dict[str, Any] | None = None) -> list[str]:
  """"field: run has A, config has B" for each training field that differs
  between two configs (as JSON-loaded dicts), in field order.

  defaults: flat {"train.steps": 4000} values of fields a config may omit
    (one written before the field existed); a missing field has its default.
  """
  def fields(config):
    flat = dict(defaults or {})
    flat.update(_flatten({k: config.get(k) for k in TRAINING_SECTIONS}, ""))
    return {k: v for k, v in flat.items() if k not in RESUMABLE_FIELDS}
  a, b = fields(old), fields(new)
  return [f"{k}: run has {a.get(k)!r}, config has {b.get(k)!r}"
          for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def claim_workdir(config, workdir: str | Path,
                  defaults: dict[str, Any] | None = None) -> None:
  """Writes <workdir>/config.json, refusing a workdir of another run.

  defaults: as `config_differences`.

  Raises:
    ConfigMismatch listing every differing field when the workdir's
    config.json is of another training config (the file is left as it is).
  """
  workdir = Path(workdir)
  text = config.to_json_best_effort(indent=2)
  path = workdir / CONFIG_FILE
  if path.is_file():
    diffs = config_differences(json.loads(path.read_text()), json.loads(text),
                               defaults)
    if diffs:
      raise ConfigMismatch(
          f"{workdir} holds a run of another config; refusing to resume it "
          f"(use another --workdir): " + "; ".join(diffs))
  _files.atomic_write(path, text)
