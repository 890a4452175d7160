r"""Where in its context does the model lose the needle?

Full-cache accuracy of a RULER-style needle task by needle depth and by the
needle's distance (in tokens) from the end of the prompt:

  python -m data_pipelines.needle_depth --task=niah_single_1 --length=2k \
      --num_samples=60 --seed=3000 --output_dir=runs/needle_depth

Writes OUTPUT_DIR/<task>_<length>_<seed>.jsonl (one record per sample:
depth, distance, score, prediction; a rerun skips the samples already there,
so a killed run continues), <task>_<length>_<seed>.md (accuracy per depth
decile and per 256-token distance bucket) and <task>_<length>_<seed>.png.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from absl import app
from absl import flags
import tqdm

from data_pipelines import ruler
from data_pipelines import samples as samples_lib
from data_pipelines import scoring

_TASK = flags.DEFINE_string("task", "niah_single_1", "A niah_* task.")
_LENGTH = flags.DEFINE_string("length", "2k", "Target length (2048 or 2k).")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 40, "Samples to run.")
_SEED = flags.DEFINE_integer("seed", 0, "Sample seed.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 4, "Prompts per batch.")
_MAX_NEW_TOKENS = flags.DEFINE_integer(
    "max_new_tokens", 24, "Tokens to generate (an answer is one value).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where results go.")
_GGUF = flags.DEFINE_string("gguf", None, "A Gemma 3 GGUF; default: the "
                            "shipped Gemma 3 270M.")

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
  fig.savefig(path, dpi=120)
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
      tmp = path.with_suffix(".tmp")
      tmp.write_text("".join(json.dumps(r) + "\n" for r in records),
                     encoding="utf-8")
      os.replace(tmp, path)
  return records


def main(argv):
  del argv
  from kvp_jax import _cli  # pylint: disable=g-import-not-at-top
  from kvp_jax import inference  # pylint: disable=g-import-not-at-top
  from kvp_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  if not _TASK.value.startswith("niah"):
    _cli.fail(f"--task must be a needle task (niah_*), got {_TASK.value!r}")
  try:
    ruler.task_spec(_TASK.value)
    length = samples_lib.parse_length(_LENGTH.value)
  except ValueError as e:
    _cli.fail(str(e))
  if not _OUTPUT_DIR.value:
    _cli.fail("--output_dir is required")
  if _NUM_SAMPLES.value < 1 or _BATCH_SIZE.value < 1:
    _cli.fail("--num_samples and --batch_size must be positive")
  _cli.quiet_library_logs()
  model = model_lib.load_pretrained(_GGUF.value)
  tok = model.tokenizer
  out = Path(_OUTPUT_DIR.value)
  out.mkdir(parents=True, exist_ok=True)
  stem = f"{_TASK.value}_{length}_{_SEED.value}"
  path = out / f"{stem}.jsonl"
  try:
    records = read_records(path)
  except ValueError as e:
    _cli.fail(str(e))
  done = {r["id"] for r in records}
  todo = [i for i in range(_NUM_SAMPLES.value)
          if f"{_TASK.value}-{length}-{_SEED.value}-{i}" not in done]
  batches = [todo[i:i + _BATCH_SIZE.value]
             for i in range(0, len(todo), _BATCH_SIZE.value)]
  for batch in tqdm.tqdm(batches, desc=f"{stem}", unit="batch"):
    samples = [ruler.generate_sample(_TASK.value, i, length, tok, _SEED.value)
               for i in batch]
    ids = [tok.encode(samples_lib.prompt_text(s), add_bos=True)
           for s in samples]
    outs = inference.generate(model, ids, _MAX_NEW_TOKENS.value)
    new = []
    for s, o, prompt in zip(samples, outs, ids):
      text = tok.decode(o)
      new.append(dict(id=s.id, depth=min(s.metadata["depths"]),
                      distance=needle_distance(s, tok), prompt_tokens=len(prompt),
                      score=scoring.score_sample(s, text),
                      answers=s.answers, prediction=text[:100]))
    with path.open("a", encoding="utf-8") as f:   # One line per sample.
      f.write("".join(json.dumps(r) + "\n" for r in new))
    records += new
  records = [r for r in records if int(r["id"].rsplit("-", 1)[1]) <
             _NUM_SAMPLES.value]
  title = f"{_TASK.value} at {length} tokens, full cache, seed {_SEED.value}"
  (out / f"{stem}.md").write_text(markdown(records, title))
  plot(records, out / f"{stem}.png", title)
  print(markdown(records, title))


if __name__ == "__main__":
  app.run(main)
