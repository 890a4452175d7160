r"""Greedy generation from the command line.

  python -m kvp_jax.generate --prompt="The capital of France is" \
      --max_new_tokens=16
  python -m kvp_jax.generate --prompts_file=prompts.txt --batch_size=8

A prompts file holds one prompt per line (write "\n" for a newline inside a
prompt). Prints each prompt and its continuation; --output_jsonl also writes
{"prompt", "completion"} records. A prompt whose tokens plus
--max_new_tokens exceed the model's context (32768 for Gemma 3 270M) stops
the command with one `error:` line before anything runs.

With --budget the cache is evicted down to that many tokens per head:

  python -m kvp_jax.generate --prompt=... --budget=256 --policy=runs/ruler/policy.kvp
  python -m kvp_jax.generate --prompt=... --budget=256 --scorer=snapkv
"""

import json
from pathlib import Path

from absl import flags
from tqdm import tqdm

from kvp_jax import _cli
from kvp_jax import _files
from kvp_jax import eviction as eviction_lib
from kvp_jax import inference

_PROMPT = flags.DEFINE_multi_string("prompt", [], "A prompt (repeatable).")
_PROMPTS_FILE = flags.DEFINE_string("prompts_file", None,
                                    "File with one prompt per line.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 32,
                                       "Tokens to generate per prompt.",
                                       lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Prompts per batch.",
                                   lower_bound=1)
_OUTPUT_JSONL = flags.DEFINE_string("output_jsonl", None,
                                    "Also write the results here.")
_cli.define_model_flags()
_cli.define_eviction_flags()


def read_prompts() -> list[str]:
  prompts = list(_PROMPT.value)
  if _PROMPTS_FILE.value:
    path = Path(_PROMPTS_FILE.value)
    if not path.is_file():
      _cli.fail(f"--prompts_file {path} does not exist")
    for line in path.read_text(encoding="utf-8").splitlines():
      if line.strip():
        prompts.append(line.replace("\\n", "\n"))
  if not prompts:
    _cli.fail("give --prompt or --prompts_file")
  return prompts


def main(argv):
  del argv
  prompts = read_prompts()
  _cli.check_file_flag("gguf", "GGUF file")
  checked = _cli.check_eviction_flags()  # Before the model loads.
  model = _cli.load_model_from_flags()
  scorer, eviction = _cli.eviction_from_flags(model, checked)
  all_ids = model.tokenizer.encode_batch(prompts, add_bos=True)
  # Every prompt, not only the first batch's, before anything compiles.
  inference.check_context(model.config, [len(i) for i in all_ids],
                          _MAX_NEW_TOKENS.value)
  results = []
  batches = range(0, len(prompts), _BATCH_SIZE.value)
  for start in tqdm(batches, desc="generating", unit="batch",
                    disable=len(batches) == 1):
    chunk = prompts[start:start + _BATCH_SIZE.value]
    ids = all_ids[start:start + _BATCH_SIZE.value]
    if eviction is None:
      outs = inference.generate(model, ids, _MAX_NEW_TOKENS.value)
    else:
      outs, _ = eviction_lib.generate_compressed(model, scorer, eviction, ids,
                                               _MAX_NEW_TOKENS.value)
    for prompt, out in zip(chunk, outs):
      completion = model.tokenizer.decode(out)
      results.append({"prompt": prompt, "completion": completion})
      print(f"=== {prompt!r}\n{prompt}{completion}\n", flush=True)
  if _OUTPUT_JSONL.value:
    _files.atomic_write(_OUTPUT_JSONL.value,
                        "".join(json.dumps(r) + "\n" for r in results))


if __name__ == "__main__":
  _cli.run(main)
