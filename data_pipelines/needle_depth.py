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
from pathlib import Path

from absl import flags
import tqdm

from data_pipelines import depth_report
from kvp_jax.samples import ruler
from kvp_jax import samples as samples_lib
from kvp_jax.samples import scoring

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
    records = depth_report.read_records(path)
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
                      distance=depth_report.needle_distance(s, tok),
                      prompt_tokens=len(prompt),
                      score=scoring.score_sample(s, text),
                      answers=s.answers, prediction=text[:100]))
    with path.open("a", encoding="utf-8") as f:   # One line per sample.
      f.write("".join(json.dumps(r) + "\n" for r in new))
    records += new
  records = [r for r in records if int(r["id"].rsplit("-", 1)[1]) <
             _NUM_SAMPLES.value]
  title = f"{_TASK.value} at {length} tokens, full cache, seed {_SEED.value}"
  (out / f"{stem}.md").write_text(depth_report.markdown(records, title))
  depth_report.plot(records, out / f"{stem}.png", title)
  print(depth_report.markdown(records, title))


if __name__ == "__main__":
  from kvp_jax import _cli  # pylint: disable=g-import-not-at-top
  _cli.run(main)
