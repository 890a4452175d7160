"""Frozen test files: sample files that only report, never choose.

A directory of frozen test samples holds a manifest.json with
"role": "test" and its files, each with its sha256 (experiments/test_suites/
is the project's). Choosing anything on them (recording traces, training,
sweeping, a dev evaluation) would make them dev samples, so every tool that
chooses refuses them (`refuse_test_files`), and only an evaluation config
whose eval.role is "test" reads them, for a named policy.

  manifest_of(path)             the manifest freezing a sample file, or None
  test_files(sources)           the frozen test files a list of sources reads
  refuse_test_files(sources, where)
                                ValueError naming the first one
  check_frozen(manifest_path)   ValueError naming a file whose hash moved
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

MANIFEST = "manifest.json"
TEST_ROLE = "test"


def _manifest(directory: Path) -> dict | None:
  path = directory / MANIFEST
  if not path.is_file():
    return None
  try:
    manifest = json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not JSON ({e})") from None
  return manifest if manifest.get("role") == TEST_ROLE else None


def _listed(manifest: Mapping[str, Any]) -> dict[str, dict]:
  """{file name: entry} of a manifest's "files" (a list of entries with
  "name", or a mapping name -> entry)."""
  files = manifest.get("files") or {}
  if isinstance(files, Mapping):
    return {str(k): dict(v) for k, v in files.items()}
  return {str(f["name"]): dict(f) for f in files}


def manifest_of(path: str | os.PathLike[str]) -> Path | None:
  """The test manifest that lists the sample file `path`, or None."""
  path = Path(path)
  manifest = _manifest(path.parent)
  if manifest is not None and path.name in _listed(manifest):
    return path.parent / MANIFEST
  return None


def test_files(sources: Sequence[Mapping[str, Any]]) -> list[str]:
  """The frozen test files that `sources` (kvp_jax.samples.sources specs)
  read, in order."""
  out = []
  for source in sources or ():
    if source.get("kind") == "jsonl":
      out += [str(p) for p in source.get("paths") or ()
              if manifest_of(p) is not None]
  return out


def refuse_test_files(sources: Sequence[Mapping[str, Any]],
                      where: str) -> None:
  """ValueError naming the first frozen test file of `sources`."""
  found = test_files(sources)
  if found:
    raise ValueError(f"{where}: {found[0]} is a frozen test file "
                     f"({manifest_of(found[0])}): test samples only report, "
                     "from an evaluation config with eval.role = 'test' "
                     "(experiments/test.py)")


def check_frozen(manifest_path: str | os.PathLike[str]) -> None:
  """ValueError naming the first listed file that is missing or whose
  sha256 is not the manifest's."""
  manifest_path = Path(manifest_path)
  manifest = _manifest(manifest_path.parent)
  if manifest is None:
    raise ValueError(f"{manifest_path}: not a test manifest (role "
                     f"{TEST_ROLE!r})")
  for name, entry in _listed(manifest).items():
    path = manifest_path.parent / name
    if not path.is_file():
      raise ValueError(f"{path}: listed in {manifest_path}, missing")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entry.get("sha256"):
      raise ValueError(f"{path}: sha256 {digest[:16]}..., the manifest "
                       f"{str(entry.get('sha256'))[:16]}...: a frozen file "
                       "changed")
