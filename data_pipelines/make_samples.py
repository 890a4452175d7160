r"""Writes sample JSONL files, one per (task, target length).

  python -m data_pipelines.make_samples --tasks=niah_single_1,vt \
      --lengths=1024,2048 --num_samples=20 --seed=0 --output_dir=DIR \
      [--dialogues] [--documents=pydoc,python_doc,/some/dir]

writes DIR/niah_single_1_1024.jsonl, DIR/vt_2048.jsonl, ... and, with
--dialogues, DIR/dialogues_<length>.jsonl; with --documents, one
DIR/documents_<source>_<length>.jsonl per source ("pydoc", "python_doc" (the
python3.11-doc package; skipped with a warning when not installed) or a
directory of .txt/.md/.rst files). --tasks=all names every RULER task.
Lengths may be written 4096 or 4k.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from absl import flags
from absl import logging
import tqdm

from kvp_jax.samples import dialogues
from kvp_jax.samples import documents
from kvp_jax.samples import ruler
from kvp_jax import samples as samples_lib
from kvp_jax.samples.schema import parse_length
from kvp_jax import _cli

_TASKS = flags.DEFINE_list(
    "tasks", [], "RULER tasks to generate, or 'all'. Known: " +
    ", ".join(ruler.task_names()) + ".")
_LENGTHS = flags.DEFINE_list(
    "lengths", ["4096"], "Target lengths in tokens (BOS + prompt + tokens to "
    "generate), e.g. 1024,2k,4k.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 20,
                                    "Samples per (task, length).",
                                    lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of every random choice.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None,
                                  "Where the JSONL files go.")
_DIALOGUES = flags.DEFINE_bool("dialogues", False,
                               "Also write chitchat dialogue samples.")
_DOCUMENTS = flags.DEFINE_list(
    "documents", [], "Document sources for perplexity samples: 'pydoc', "
    "'python_doc' and/or directories of .txt/.md/.rst files.")
_CONTINUATION_FRACTION = flags.DEFINE_float(
    "continuation_fraction", documents.DEFAULT_CONTINUATION_FRACTION,
    "Share of a dialogue/document sample's tokens in its scored "
    "continuation.")
_GGUF = flags.DEFINE_string("gguf", None, "GGUF file whose tokenizer measures "
                            "lengths; default: the shipped Gemma 3 270M.")


def resolve_tasks(names: Sequence[str]) -> list[str]:
  """Task names with 'all' expanded; ValueError listing the known ones."""
  out: list[str] = []
  for name in names:
    name = name.strip()
    expanded = ruler.task_names() if name == "all" else [name]
    for task in expanded:
      ruler.task_spec(task)
      if task not in out:
        out.append(task)
  return out


def _document_jobs(sources: Sequence[str]
                   ) -> list[tuple[str, list[documents.Document]]]:
  jobs = []
  for source in sources:
    docs = documents.load_documents(source)
    if not docs:
      logging.warning("no documents in source %r (is python3.11-doc "
                      "installed?); skipped", source)
      continue
    jobs.append((f"documents_{documents.source_name(source)}", docs))
  return jobs


def make_samples(output_dir: str | Path, *, tasks: Sequence[str],
                 lengths: Sequence[int], num_samples: int, seed: int,
                 tokenizer: samples_lib.TokenizerLike, dialogue: bool = False,
                 document_sources: Sequence[str] = (),
                 continuation_fraction: float = (
                     documents.DEFAULT_CONTINUATION_FRACTION),
                 progress: bool = True) -> list[Path]:
  """Generates and writes every requested file; returns their paths.

  Raises:
    ValueError: an unknown task.
    FileNotFoundError: a document directory that does not exist.
  """
  tasks = resolve_tasks(tasks)
  doc_jobs = _document_jobs(document_sources)
  conversations = dialogues.load_conversations() if dialogue else []
  jobs: list[tuple[str, int, Callable[[], list[samples_lib.Sample]]]] = []
  for length in lengths:
    for task in tasks:
      jobs.append((task, length, lambda t=task, n=length: ruler.generate_task(
          t, num_samples, n, tokenizer, seed)))
    if dialogue:
      jobs.append((dialogues.TASK, length,
                   lambda n=length: dialogues.generate_dialogues(
                       num_samples, n, tokenizer, seed,
                       continuation_fraction=continuation_fraction,
                       conversations=conversations)))
    for name, docs in doc_jobs:
      jobs.append((name, length,
                   lambda n=length, name=name, docs=docs:
                   documents.generate_documents(
                       docs, num_samples, n, tokenizer, seed, task=name,
                       continuation_fraction=continuation_fraction)))
  written = []
  with tqdm.tqdm(total=len(jobs) * num_samples, unit="sample",
                 disable=not progress) as bar:
    for name, length, generate in jobs:
      bar.set_description(f"{name} {length}")
      generated = generate()
      if len(generated) < num_samples:
        logging.warning("%s at %d tokens: %d of %d samples (too little "
                        "text)", name, length, len(generated), num_samples)
      written.append(samples_lib.write_samples(
          Path(output_dir) / f"{name}_{length}.jsonl", generated))
      bar.update(num_samples)
  return written


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    _cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _OUTPUT_DIR.value:
    _cli.fail("--output_dir is required")
  try:
    tasks = resolve_tasks(_TASKS.value)
    lengths = [parse_length(length) for length in _LENGTHS.value]
  except ValueError as e:
    _cli.fail(str(e))
  for source in _DOCUMENTS.value:
    if source not in (documents.PYDOC, documents.PYTHON_DOC) and not Path(
        source).is_dir():
      _cli.fail(f"--documents: {source!r} is neither 'pydoc', 'python_doc' nor a "
            f"directory")
  if not 0 < _CONTINUATION_FRACTION.value < 1:
    _cli.fail("--continuation_fraction must be between 0 and 1")
  if not (tasks or _DIALOGUES.value or _DOCUMENTS.value):
    _cli.fail("nothing to do: give --tasks, --dialogues or --documents")
  _cli.check_file_flag("gguf", "GGUF file")
  # Imported here: it pulls in jax, which flag errors need not wait for.
  from kvp_jax import model  # pylint: disable=import-outside-toplevel
  tokenizer = model.load_tokenizer(_GGUF.value)
  paths = make_samples(
      _OUTPUT_DIR.value, tasks=tasks, lengths=lengths,
      num_samples=_NUM_SAMPLES.value, seed=_SEED.value, tokenizer=tokenizer,
      dialogue=_DIALOGUES.value, document_sources=_DOCUMENTS.value,
      continuation_fraction=_CONTINUATION_FRACTION.value)
  for path in paths:
    print(path)


if __name__ == "__main__":
  _cli.run(main)
