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
leaves a DONE file and is skipped when the sweep is rerun. With
--parallel=N, N points run at once, each seeing one accelerator
(CUDA_VISIBLE_DEVICES / TPU_VISIBLE_CHIPS = its slot). At the end every
point's eval/results.jsonl is gathered into <root>/sweep_results.{jsonl,md}.

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

from absl import app
from absl import flags

_CONFIG = flags.DEFINE_string("config", None, "Base experiment config file.")
_GRID = flags.DEFINE_multi_string(
    "grid", [], "KEY=V1,V2,... (repeatable): the grid is their product.")
_SWEEP = flags.DEFINE_string("sweep", None, "A sweep file with get_sweep().")
_ROOT = flags.DEFINE_string("root", None, "Directory of the sweep's runs.",
                            required=True)
_STAGES = flags.DEFINE_list("stages", ["traces", "train", "export", "evaluate"],
                            "Pipeline stages each point runs.")
_PARALLEL = flags.DEFINE_integer("parallel", 1,
                                 "Points run at once (one per accelerator).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands only.")


def parse_grid(specs: Sequence[str]) -> list[dict[str, str]]:
  """["a.b=1,2", "c=x,y"] -> the 4 points of their product."""
  axes = []
  for spec in specs:
    if "=" not in spec:
      raise ValueError(f"grid axis {spec!r} is not KEY=V1,V2,...")
    key, values = spec.split("=", 1)
    values = [v for v in values.split(",") if v]
    if not values:
      raise ValueError(f"grid axis {key!r} has no values")
    axes.append([(key.strip(), v.strip()) for v in values])
  return [dict(p) for p in itertools.product(*axes)] if axes else [{}]


def load_sweep(path: str) -> list[dict[str, Any]]:
  spec = importlib.util.spec_from_file_location("sweep_file", path)
  if spec is None or not Path(path).is_file():
    raise ValueError(f"sweep file not found: {path}")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"{path} defines no get_sweep()")
  return list(module.get_sweep())


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


def run_point(args: list[str], workdir: Path, slot: int) -> int:
  """Runs one point; writes DONE on success. Output goes to its log."""
  workdir.mkdir(parents=True, exist_ok=True)
  env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(slot),
             TPU_VISIBLE_CHIPS=str(slot)) if _PARALLEL.value > 1 else None
  with open(workdir / "sweep.log", "a", encoding="utf-8") as log:
    log.write(f"$ {' '.join(args)}\n")
    log.flush()
    code = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT,
                          env=env, check=False).returncode
  if code == 0:
    (workdir / "DONE").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
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
  try:
    if _SWEEP.value:
      points = load_sweep(_SWEEP.value)
    else:
      points = parse_grid(_GRID.value)
    if not _SWEEP.value and not _CONFIG.value:
      raise ValueError("give --config (with --grid) or --sweep")
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  jobs = []
  for point in points:
    point = dict(point)
    config_file = point.pop("config", None) or _CONFIG.value
    if not config_file:
      print(f"error: point {point} names no config", file=sys.stderr)
      sys.exit(2)
    name = point_name(dict(point, **({"config": config_file}
                                     if _SWEEP.value else {})))
    point.pop("name", None)
    workdir = root / name
    jobs.append((name, point, workdir,
                 command(config_file, point, workdir, _STAGES.value, root)))
  if len({j[0] for j in jobs}) != len(jobs):
    print("error: two points have the same name", file=sys.stderr)
    sys.exit(2)
  todo = [j for j in jobs if not (j[2] / "DONE").is_file()]
  print(f"{len(jobs)} points, {len(jobs) - len(todo)} already done")
  for name, _, workdir, args in todo:
    print(f"  {name}: {' '.join(args)}")
  if _DRY_RUN.value:
    return
  failed = []
  # Points sharing a trace store must not record it at the same time: the
  # first point of each store runs before its siblings.
  by_store: dict[str, list] = {}
  for job in todo:
    store = next((a for a in job[3] if a.startswith("--config.traces.store=")),
                 "")
    by_store.setdefault(store, []).append(job)
  waves = [[group[0] for group in by_store.values()],
           [j for group in by_store.values() for j in group[1:]]]
  for wave in waves:
    with concurrent.futures.ThreadPoolExecutor(_PARALLEL.value) as pool:
      futures = {pool.submit(run_point, args, workdir, i % _PARALLEL.value):
                 name for i, (name, _, workdir, args) in enumerate(wave)}
      for future in concurrent.futures.as_completed(futures):
        name = futures[future]
        code = future.result()
        print(f"  {name}: {'done' if code == 0 else f'FAILED ({code})'}",
              flush=True)
        if code:
          failed.append(name)
  rows = gather(root, [(j[0], j[1]) for j in jobs])
  root.mkdir(parents=True, exist_ok=True)
  with open(root / "sweep_results.jsonl", "w", encoding="utf-8") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  (root / "sweep_results.md").write_text(gathered_markdown(rows),
                                         encoding="utf-8")
  print(f"gathered {len(rows)} rows: {root / 'sweep_results.md'}")
  if failed:
    print(f"failed points (see their sweep.log): {', '.join(failed)}",
          file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
