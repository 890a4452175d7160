r"""Runs a grid of config overrides, one process per point, and gathers the
evaluations into one table.

  python -m launch.sweep --config=experiments/ruler_agents.py \
      --grid="train.num_samples=1,4" --grid="policy.use_values=true,false" \
      --root=runs/sweeps/ablation
  python -m launch.sweep --sweep=launch/ablation.py --root=runs/sweeps/ablation

Each point runs `python -m kvp_jax.pipeline` with its `--config.KEY=VALUE`
overrides in its own workdir, named after the overrides
(e.g. `num_samples=4,use_values=false`). Points whose traces settings are
the same share one trace store (<root>/traces-<hash>). A point that finished
leaves a DONE file naming the stages it ran; a rerun skips the points whose
DONE covers every stage asked for (so `--stages=traces` then
`--stages=train,export` runs the second part; a DONE written before the
stages were recorded counts as every stage). With
--parallel=N, N points run at once, each seeing one accelerator
(CUDA_VISIBLE_DEVICES / TPU_VISIBLE_CHIPS = its slot). At the end every
point's eval/results.jsonl is gathered into <root>/sweep_results.{jsonl,md}
(left as they are when no point has results yet).

Every point's overrides are checked against its config (field names and
values, as the pipeline would parse them) before anything is launched. A
list field takes a bracketed value: --grid="eval.budgets=[32,64],[128]".
Points that share a trace store run their traces stage one at a time: the
first point of each store records it, its siblings then skip the stage.

A sweep file defines `get_sweep()` returning a list of points; a point is a
dict of overrides, with optional "config" (another config file) and "name".
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from absl import flags
from ml_collections import config_flags

from kvp_jax import _cli
from kvp_jax import _config_args
from kvp_jax import _files
from kvp_jax.samples import frozen

_CONFIG = flags.DEFINE_string("config", None, "Base experiment config file.")
_GRID = flags.DEFINE_multi_string(
    "grid", [], "KEY=V1,V2,... (repeatable): the grid is their product.")
_SWEEP = flags.DEFINE_string("sweep", None, "A sweep file with get_sweep().")
_ROOT = flags.DEFINE_string("root", None, "Directory of the sweep's runs.",
                            required=True)
_STAGES = flags.DEFINE_list("stages", ["traces", "train", "export", "evaluate"],
                            "Pipeline stages each point runs.")
_PARALLEL = flags.DEFINE_integer("parallel", 1,
                                 "Points run at once (one per accelerator).",
                                 lower_bound=1)
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands only.")


def parse_grid(specs: Sequence[str]) -> list[dict[str, str]]:
  """["a.b=1,2", "c=x,y"] -> the 4 points of their product."""
  axes = []
  for spec in specs:
    if "=" not in spec:
      raise ValueError(f"grid axis {spec!r} is not KEY=V1,V2,...")
    key, values = spec.split("=", 1)
    values = [v for v in _split_values(values) if v]
    if not values:
      raise ValueError(f"grid axis {key!r} has no values")
    axes.append([(key.strip(), v.strip()) for v in values])
  return [dict(p) for p in itertools.product(*axes)] if axes else [{}]


def _split_values(text: str) -> list[str]:
  """Splits at the commas outside brackets: "[1,2],[3]" -> ["[1,2]", "[3]"]."""
  out, depth, start = [], 0, 0
  for i, ch in enumerate(text):
    if ch in "[(":
      depth += 1
    elif ch in "])":
      depth -= 1
    elif ch == "," and depth == 0:
      out.append(text[start:i])
      start = i + 1
  out.append(text[start:])
  return out


def check_point(config_file: str, overrides: dict[str, Any],
                name: str) -> None:
  """Parses the point's overrides against its config as the pipeline would.

  Raises:
    ValueError naming the point and the unknown field or bad value.
  """
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv,
                                  lock_config=False)
  argv = ["pipeline", f"--config={config_file}"] + [
      f"--config.{k}={v}" for k, v in overrides.items()]
  try:
    _config_args.parse(argv, fv)
  except flags.Error as e:
    raise ValueError(f"point {name}: {_cli.one_line(str(e))}") from None
  config = fv["config"].value
  if config.get("eval", {}).get("role") == "test":
    raise ValueError(f"point {name}: config.eval.role = 'test': a sweep "
                     "chooses, and test suites only report")
  sources = list(config.traces.sources) + [
      s for suite in config.eval.get("suites", ()) for s in
      suite.get("sources", ())]
  frozen.refuse_test_files(sources, f"point {name}")


def load_sweep(path: str) -> list[dict[str, Any]]:
  """The points of a sweep file, `FILE.py` or `FILE.py:ARG` (ARG is passed
  to get_sweep, as a config file's argument to get_config)."""
  path, _, arg = path.partition(":")
  spec = importlib.util.spec_from_file_location("sweep_file", path)
  if spec is None or not Path(path).is_file():
    raise ValueError(f"sweep file not found: {path}")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"{path} defines no get_sweep()")
  return list(module.get_sweep(arg) if arg else module.get_sweep())


def point_name(point: dict[str, Any]) -> str:
  """A workdir name from a point's overrides (last key part = value)."""
  if point.get("name"):
    return str(point["name"])
  parts = []
  if "config" in point:
    parts.append(Path(point["config"]).stem)
  parts += [f"{k.split('.')[-1]}={v}" for k, v in point.items()
            if k not in ("config", "name")]
  name = ",".join(parts) or "base"
  return re.sub(r"[^A-Za-z0-9=,._+-]", "_", name)


def _traces_key(config_file: str, overrides: dict[str, Any]) -> str:
  """Identifies a point's trace settings: the config file and its traces.*
  and model.* overrides."""
  relevant = {k: str(v) for k, v in overrides.items()
              if k.startswith(("traces.", "model."))}
  text = json.dumps([str(Path(config_file).resolve()), relevant],
                    sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:10]


def command(config_file: str, overrides: dict[str, Any], workdir: Path,
            stages: Sequence[str], root: Path) -> list[str]:
  args = [sys.executable, "-m", "kvp_jax.pipeline", f"--config={config_file}",
          f"--workdir={workdir}", f"--stages={','.join(stages)}"]
  if "traces.store" not in overrides:
    store = root / f"traces-{_traces_key(config_file, overrides)}"
    args.append(f"--config.traces.store={store}")
  args += [f"--config.{k}={v}" for k, v in overrides.items()]
  return args


def done_stages(workdir: Path) -> frozenset[str] | None:
  """The stages a point's DONE file records: empty when there is none, None
  (every stage) for a DONE without a stage list (a timestamp alone)."""
  path = workdir / "DONE"
  if not path.is_file():
    return frozenset()
  try:
    record = json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError:
    return None
  if not isinstance(record, dict) or not isinstance(record.get("stages"),
                                                    list):
    return None
  return frozenset(record["stages"])


def is_done(workdir: Path, stages: Sequence[str]) -> bool:
  """Whether the point in `workdir` has run every one of `stages`."""
  done = done_stages(workdir)
  return done is None or set(stages) <= done


def run_point(args: list[str], workdir: Path, slot: int,
              stages: Sequence[str] = ()) -> int:
  """Runs one point; on success records `stages` (with any recorded before)
  in DONE. Output goes to its log."""
  workdir.mkdir(parents=True, exist_ok=True)
  env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(slot),
             TPU_VISIBLE_CHIPS=str(slot)) if _PARALLEL.value > 1 else None
  with open(workdir / "sweep.log", "a", encoding="utf-8") as log:
    log.write(f"$ {' '.join(args)}\n")
    log.flush()
    code = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT,
                          env=env, check=False).returncode
  if code == 0:
    before = done_stages(workdir) or frozenset()
    _files.atomic_write(workdir / "DONE", json.dumps(
        {"stages": sorted(before | set(stages)),
         "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
  return code


def gather(root: Path, points: Sequence[tuple[str, dict]]) -> list[dict]:
  """Every point's aggregated evaluation rows, tagged with its overrides."""
  rows = []
  for name, overrides in points:
    path = root / name / "eval" / "results.jsonl"
    if not path.is_file():
      continue
    for line in path.read_text(encoding="utf-8").splitlines():
      row = json.loads(line)
      row["run"] = name
      row.update({f"override:{k}": str(v) for k, v in overrides.items()})
      rows.append(row)
  return rows


def gathered_markdown(rows: Sequence[dict]) -> str:
  """One table per (suite, metric) on the "mean" group: runs x (scorer,
  budget) cells."""
  lines = ["# Sweep results", ""]
  suites = sorted({(r["suite"], r["metric"]) for r in rows})
  for suite, metric in suites:
    sel = [r for r in rows if r["suite"] == suite and r["group"] == "mean"
           and r["metric"] == metric]
    cols = sorted({(r["scorer"], r["budget"]) for r in sel},
                  key=lambda c: (c[0] != "kvp", c[0],
                                 int(c[1]) if c[1].isdigit() else -1))
    lines += [f"## {suite}: {metric}", "",
              "| run | " + " | ".join(f"{s} {b}" for s, b in cols) + " |",
              "|---" * (len(cols) + 1) + "|"]
    for run in sorted({r["run"] for r in sel}):
      cells = []
      for s, b in cols:
        m = [r for r in sel if r["run"] == run and r["scorer"] == s and
             r["budget"] == b]
        cells.append(f"{m[0]['value']:.3f}" if m else "")
      lines.append(f"| {run} | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def main(argv):
  del argv
  root = Path(_ROOT.value)
  if _SWEEP.value:
    points = load_sweep(_SWEEP.value)
  else:
    points = parse_grid(_GRID.value)
  if not _SWEEP.value and not _CONFIG.value:
    raise ValueError("give --config (with --grid) or --sweep")
  jobs = []
  for point in points:
    point = dict(point)
    config_file = point.pop("config", None) or _CONFIG.value
    if not config_file:
      raise ValueError(f"point {point} names no config")
    name = point_name(dict(point, **({"config": config_file}
                                     if _SWEEP.value else {})))
    point.pop("name", None)
    check_point(config_file, point, name)  # Before anything is launched.
    workdir = root / name
    jobs.append((name, point, workdir, config_file))
  if len({j[0] for j in jobs}) != len(jobs):
    raise ValueError("two points have the same name")
  todo = [j for j in jobs if not is_done(j[2], _STAGES.value)]
  # Points sharing a trace store must not record it at the same time (the
  # store's lock would stop all but one): the first point of each store
  # runs first, its siblings after it, without the traces stage.
  by_store: dict[str, list] = {}
  for job in todo:
    store = job[1].get("traces.store") or (
        root / f"traces-{_traces_key(job[3], job[1])}")
    by_store.setdefault(str(store), []).append(job)
  firsts = [group[0] for group in by_store.values()]
  siblings = [j for group in by_store.values() for j in group[1:]]
  later_stages = [s for s in _STAGES.value if s != "traces"]
  waves = [[(j, command(j[3], j[1], j[2], _STAGES.value, root))
            for j in firsts],
           [(j, command(j[3], j[1], j[2], later_stages, root))
            for j in siblings]]
  print(f"{len(jobs)} points, {len(jobs) - len(todo)} already done")
  for wave in waves:
    for (name, _, _, _), args in wave:
      print(f"  {name}: {' '.join(args)}")
  if _DRY_RUN.value:
    return
  failed = []
  for wave in waves:
    with concurrent.futures.ThreadPoolExecutor(_PARALLEL.value) as pool:
      futures = {pool.submit(run_point, args, workdir, i % _PARALLEL.value,
                             _STAGES.value):
                 name for i, ((name, _, workdir, _), args) in enumerate(wave)}
      for future in concurrent.futures.as_completed(futures):
        name = futures[future]
        code = future.result()
        print(f"  {name}: {'done' if code == 0 else f'FAILED ({code})'}",
              flush=True)
        if code:
          failed.append(name)
  rows = gather(root, [(j[0], j[1]) for j in jobs])
  if rows:
    _files.atomic_write(root / "sweep_results.jsonl",
                        "".join(json.dumps(r) + "\n" for r in rows))
    _files.atomic_write(root / "sweep_results.md", gathered_markdown(rows))
    print(f"gathered {len(rows)} rows: {root / 'sweep_results.md'}")
  else:
    print(f"no point has evaluation results yet; {root / 'sweep_results.md'}"
          " left as it was", file=sys.stderr)
  if failed:
    print(f"failed points (see their sweep.log): {', '.join(failed)}",
          file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  _cli.run(main)
