r"""One long prompt through the generation command, as a user runs it: wall
time and peak resident memory of `python -m kvp_jax.generate` on a prompt
of --prompt_tokens tokens of real text (Python's own documentation,
`pydoc_data.topics`, concatenated until long enough), the shipped model and
policy, evicted to --budget with --protocol (chunked: peak slots <= budget
+ chunk).

  python benchmarks/long_generate.py --prompt_tokens=32000 --budget=1024 \
      --out=benchmarks/results/cpu/long_generate_32k.jsonl

The command runs in a subprocess under `/usr/bin/time -v` (its maximum
resident set size is the peak memory of the whole process: model, cache,
compilation); the prompt is written to a temporary prompts file. One JSON
line: the command, the prompt's tokens (and those the command reads: the
text tokenized again, BOS included), wall seconds, peak RSS in MiB, the
continuation's first characters, the device and the date.
"""

import datetime
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from absl import app
from absl import flags

import _timing

_PROMPT_TOKENS = flags.DEFINE_integer("prompt_tokens", 32000,
                                      "Tokens of the prompt.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 16,
                                       "Tokens to generate.")
_BUDGET = flags.DEFINE_integer("budget", 1024, "Tokens kept per head.")
_SCORER = flags.DEFINE_string("scorer", "kvp", "Eviction rule.")
_PROTOCOL = flags.DEFINE_enum("protocol", "chunked",
                              ["once", "chunked", "decode"], "Protocol.")
_CHUNK_SIZE = flags.DEFINE_integer("chunk_size", 512, "Prefill chunk.")
_OUT = flags.DEFINE_string("out", None, "Also write the JSON line here.")


def long_prompt(tokenizer, num_tokens: int) -> str:
  """The first `num_tokens` tokens of pydoc_data.topics' texts (sorted by
  topic name, concatenated), decoded back to text."""
  from pydoc_data import topics  # pylint: disable=import-outside-toplevel
  text, ids = "", []
  for name in sorted(topics.topics):
    text += topics.topics[name] + "\n\n"
    ids = tokenizer.encode(text)
    if len(ids) >= num_tokens:
      break
  if len(ids) < num_tokens:
    raise ValueError(f"pydoc_data.topics holds only {len(ids)} tokens")
  return tokenizer.decode(ids[:num_tokens])


def escaped(prompt: str) -> str:
  """A prompt as one line of a prompts file: newlines written "\\n", the
  only escape the command reads back."""
  return prompt.replace("\n", "\\n")


def _time_field(report: str, label: str) -> str:
  match = re.search(rf"^\s*{re.escape(label)}: (.+)$", report, re.M)
  if match is None:
    raise RuntimeError(f"/usr/bin/time printed no {label!r}")
  return match.group(1).strip()


def _seconds(clock: str) -> float:
  parts = [float(p) for p in clock.split(":")]     # [h:]m:ss.ss
  return sum(p * 60 ** i for i, p in enumerate(reversed(parts)))


def main(argv):
  del argv
  from kvp_jax import model  # pylint: disable=import-outside-toplevel
  tokenizer = model.load_tokenizer()
  prompt = long_prompt(tokenizer, _PROMPT_TOKENS.value)
  # What the command reads: the text tokenized again, BOS first.
  read_back = escaped(prompt).replace("\\n", "\n")
  read_tokens = len(tokenizer.encode(read_back, add_bos=True))
  with tempfile.TemporaryDirectory() as tmp:
    prompts = Path(tmp) / "prompts.txt"
    prompts.write_text(escaped(prompt) + "\n", encoding="utf-8")
    output = Path(tmp) / "out.jsonl"
    command = [sys.executable, "-m", "kvp_jax.generate",
               f"--prompts_file={prompts}", "--batch_size=1",
               f"--max_new_tokens={_MAX_NEW_TOKENS.value}",
               f"--scorer={_SCORER.value}", f"--budget={_BUDGET.value}",
               f"--protocol={_PROTOCOL.value}",
               f"--chunk_size={_CHUNK_SIZE.value}",
               f"--output_jsonl={output}"]
    done = subprocess.run(["/usr/bin/time", "-v", *command],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
      sys.exit(f"error: the command failed ({done.returncode}):\n"
               f"{done.stderr[-2000:]}")
    completion = json.loads(output.read_text().splitlines()[0])["completion"]
  shown = ["--prompts_file=PROMPTS" if c.startswith("--prompts_file")
           else c for c in command[1:] if not c.startswith("--output_jsonl")]
  row = {
      "command": "python " + " ".join(shown),
      "prompt_tokens": _PROMPT_TOKENS.value,
      "tokens_read": read_tokens,
      "max_new_tokens": _MAX_NEW_TOKENS.value,
      "wall_s": round(_seconds(_time_field(
          done.stderr, "Elapsed (wall clock) time (h:mm:ss or m:ss)")), 1),
      "peak_rss_mib": round(int(_time_field(
          done.stderr, "Maximum resident set size (kbytes)")) / 1024, 1),
      "completion_start": completion[:60],
      "device": _timing.device_line(),
      "date": datetime.date.today().isoformat(),
  }
  _timing.Emitter(_OUT.value).emit(row)


if __name__ == "__main__":
  app.run(main)
