"""Full-cache accuracy of a needle task by needle depth and distance: the
pure part of `python -m data_pipelines.needle_depth` (records in, tables and
plots out)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from kvp_jax import _files
from kvp_jax import samples as samples_lib


DISTANCE_BUCKET = 256


def needle_distance(sample: samples_lib.Sample,
                    tokenizer: samples_lib.TokenizerLike) -> int:
  """Tokens from the earliest answer's first character to the prompt's end.

  Raises:
    ValueError: no answer occurs in the sample's context.
  """
  text = samples_lib.prompt_text(sample)
  starts = [i for i in (text.find(a) for a in sample.answers) if i >= 0]
  if not starts:
    raise ValueError(f"sample {sample.id}: no answer occurs in its context")
  return samples_lib.count_tokens(tokenizer, text[min(starts):])


def accuracy_by(records: Sequence[dict], key: str, width: int
                ) -> list[tuple[int, float, int]]:
  """(bucket start, mean score x100, samples) per `width`-wide bucket of
  record[key], in ascending order."""
  buckets: dict[int, list[float]] = {}
  for r in records:
    buckets.setdefault(int(r[key]) // width * width, []).append(r["score"])
  return [(start, 100 * sum(v) / len(v), len(v))
          for start, v in sorted(buckets.items())]


def markdown(records: Sequence[dict], title: str) -> str:
  total = 100 * sum(r["score"] for r in records) / max(len(records), 1)
  lines = [f"# {title}", "",
           f"Mean score {total:.1f} over {len(records)} samples.", "",
           "| needle depth (%) | score | samples |", "|---|---|---|"]
  lines += [f"| {s}-{s + 9} | {acc:.0f} | {n} |"
            for s, acc, n in accuracy_by(records, "depth", 10)]
  lines += ["", "| tokens from needle to prompt end | score | samples |",
            "|---|---|---|"]
  lines += [f"| {s}-{s + DISTANCE_BUCKET - 1} | {acc:.0f} | {n} |"
            for s, acc, n in accuracy_by(records, "distance",
                                         DISTANCE_BUCKET)]
  return "\n".join(lines) + "\n"


def plot(records: Sequence[dict], path: str | os.PathLike[str],
         title: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
  for ax, (key, width, label) in zip(axes, (
      ("depth", 10, "needle depth (% of the haystack)"),
      ("distance", DISTANCE_BUCKET, "tokens from needle to prompt end"))):
    rows = accuracy_by(records, key, width)
    ax.bar([s + width / 2 for s, _, _ in rows], [a for _, a, _ in rows],
           width=0.9 * width)
    for s, a, n in rows:
      ax.annotate(str(n), (s + width / 2, a), ha="center", va="bottom",
                  fontsize=7)
    ax.set_xlabel(label)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 110)
  fig.suptitle(title + " (numbers: samples per bar)")
  fig.tight_layout()
  with _files.atomic_output(path) as tmp:
    fig.savefig(tmp, dpi=120, format="png")
  plt.close(fig)


def read_records(path: Path) -> list[dict]:
  """The records of a results file. A torn last line (a run killed while
  writing it) is dropped and the file rewritten without it, atomically."""
  if not path.is_file():
    return []
  lines = path.read_text(encoding="utf-8").splitlines()
  records = []
  for n, line in enumerate(lines):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if n != len(lines) - 1:
        raise ValueError(f"{path}:{n + 1}: not a JSON record") from None
      _files.atomic_write(path, "".join(json.dumps(r) + "\n"
                                        for r in records))
  return records
