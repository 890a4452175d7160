r"""Builds the frozen TEST suite once: samples that chose nothing.

  python -m data_pipelines.make_test_suite --config=experiments/heldout.py \
      [--output_dir=experiments/test_suites] [--force]

The held-out grid of experiments/ruler_agents.py (heldout_eval(): RULER-style
samples of kvp_jax.samples.ruler at seed 2000 and dialogues of the held-out
pool at seed 2000) chose the default policy, so it is the DEV set. This job
writes a TEST suite out of the training distribution:

  ruler_ood_2048.jsonl  the 6 tasks of kvp_jax.samples.ruler_ood (another
                        template family: needles, questions, keys, values and
                        haystacks the training generator never uses), 34
                        samples each at 2048 tokens
  ruler_ood_4096.jsonl  the same tasks, 17 samples each at 4096 tokens
  dialogues_test.jsonl  100 dialogue perplexity samples at 2048 tokens from
                        the held-out pool (so never a training conversation),
                        without any conversation the dev dialogue suite shows
                        the model, and without any conversation whose text
                        equals (sha256) a dev or training-pool one; blocks of
                        25 samples of the seeds 5000, 5001, ... (the eligible
                        conversations hold about 30 samples' worth, so
                        conversations recur across blocks, not within one)
  manifest.json         "role": "test" (kvp_jax.samples.frozen), each file's
                        sha256, sample count, size and how it was made
                        (tasks, lengths, seeds, exclusions)

--config is the dev grid's config (experiments/heldout.py, whose eval
suites are heldout_eval()'s): its dialogue samples are rebuilt exactly as
its suites specify them (kvp_jax.samples.sources.build_samples), and their
conversations read from the samples' metadata. Only the tokenizer is needed
(no forward pass); the job takes under a minute on a CPU.

The suite is frozen: with a manifest.json in --output_dir the job refuses to
run unless --force. tests/test_test_suite.py checks the files against the
manifest's hashes and the disjointness from the dev and training sets.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import platform
from pathlib import Path
from typing import Any, Iterable, Sequence

from absl import flags
from absl import logging
from ml_collections import config_flags

from kvp_jax import _cli
from kvp_jax import _files
from kvp_jax import samples as samples_lib
from kvp_jax.samples import dialogues
from kvp_jax.samples import ruler_ood
from kvp_jax.samples import sources

OUTPUT_DIR = "experiments/test_suites"
MANIFEST = "manifest.json"
SEED = 5000  # no experiment uses it (training 1000, dev 2000/2001, 3000)
RULER_OOD_PER_TASK = {2048: 34, 4096: 17}
DIALOGUE_LENGTH = 2048
NUM_DIALOGUES = 100
# The eligible conversations hold ~150k tokens, about 30 samples' worth: one
# seed's samples repeat after one pass over them, so the suite takes a block
# of samples from each of several seeds (each a shuffle of its own).
DIALOGUE_SEEDS = tuple(range(SEED, SEED + 8))
DIALOGUES_PER_SEED = 25  # under one pass: no conversation twice in a block
# Shorter samples (a huge turn ends the packing early) are skipped.
MIN_DIALOGUE_TOKENS = DIALOGUE_LENGTH - 256
DIALOGUES_FILE = "dialogues_test.jsonl"
ID_SUFFIX = "-test"
COMMAND = "python -m data_pipelines.make_test_suite"



def _define_flags() -> tuple[Any, Any, Any]:
  """The command's flags, defined only when it runs as a script: the tests
  import this module beside others that define --config."""
  return (_cli.define_config_flag(),
          flags.DEFINE_string("output_dir", OUTPUT_DIR,
                              "Where the suite and its manifest go."),
          flags.DEFINE_bool("force", False, "Rebuild over a frozen suite."))


def ruler_ood_file(length: int) -> str:
  """The file name of the ood RULER-style samples at `length` tokens."""
  return f"ruler_ood_{length}.jsonl"


def conversation_hash(conversation: dialogues.Conversation) -> str:
  """sha256 of a conversation's transcript text."""
  text = "".join(dialogues.transcript_lines(conversation))
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: str | Path) -> str:
  """sha256 of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


# ------------------------------------------------------------------ dev set


def dev_sources(dev_eval: Any, kind: str) -> list[dict[str, Any]]:
  """The sources of a kind ("ruler", "dialogues") of every suite of a dev
  grid's eval config (experiments/ruler_agents.py's heldout_eval())."""
  return [dict(source) for suite in dev_eval.suites
          for source in suite["sources"] if source["kind"] == kind]


def dev_ruler_ids(dev_eval: Any) -> set[str]:
  """Ids of the dev grid's RULER-style samples (ruler.py's id scheme)."""
  return {f"{task}-{length}-{source['seed']}-{index}"
          for source in dev_sources(dev_eval, "ruler")
          for task in source["tasks"] for length in source["lengths"]
          for index in range(source["num_samples"])}


def dev_dialogue_samples(dev_eval: Any, tokenizer: samples_lib.TokenizerLike
                         ) -> list[samples_lib.Sample]:
  """The dev grid's dialogue samples, rebuilt as its suites build them."""
  return sources.build_samples(dev_sources(dev_eval, "dialogues"), tokenizer)


def used_conversations(samples: Iterable[samples_lib.Sample]) -> set[str]:
  """Ids of the conversations dialogue samples show the model."""
  return {c for s in samples for c in s.metadata["conversations"]}


# ----------------------------------------------------------------- test set


@dataclasses.dataclass(frozen=True)
class Eligible:
  """Held-out conversations a test dialogue may use, and what was left out.

  Attributes:
    conversations: eligible conversations, in id order.
    dev_ids: conversations the dev dialogue samples use (left out).
    hash_collisions: other held-out conversations left out because their
      text equals a dev or training-pool conversation's.
  """
  conversations: list[dialogues.Conversation]
  dev_ids: list[str]
  hash_collisions: list[str]


def eligible_conversations(conversations: Sequence[dialogues.Conversation],
                           dev_ids: set[str]) -> Eligible:
  """Held-out conversations neither in `dev_ids` nor equal in text to a
  dev or training-pool conversation."""
  taken = {conversation_hash(c) for c in conversations
           if c.id in dev_ids or sources.in_pool(c.id, "train")}
  heldout = [c for c in conversations if sources.in_pool(c.id, "heldout")]
  kept, collisions = [], []
  for conversation in heldout:
    if conversation.id in dev_ids:
      continue
    if conversation_hash(conversation) in taken:
      collisions.append(conversation.id)
    else:
      kept.append(conversation)
  return Eligible(kept, sorted(dev_ids), collisions)


def _seed_block(tokenizer: samples_lib.TokenizerLike, eligible: Eligible,
                seed: int) -> list[samples_lib.Sample]:
  """The first DIALOGUES_PER_SEED samples of a seed, checked to use no
  conversation twice."""
  block = dialogues.generate_dialogues(
      DIALOGUES_PER_SEED, DIALOGUE_LENGTH, tokenizer, seed,
      conversations=eligible.conversations)
  used = [c for s in block for c in s.metadata["conversations"]]
  if len(used) != len(set(used)):
    raise ValueError(f"seed {seed}: a conversation repeats within "
                     f"{DIALOGUES_PER_SEED} samples; lower DIALOGUES_PER_SEED")
  return block


def make_dialogues(tokenizer: samples_lib.TokenizerLike, eligible: Eligible
                   ) -> tuple[list[samples_lib.Sample], list[str]]:
  """NUM_DIALOGUES dialogue samples of the eligible conversations, and the
  ids of the samples skipped (too short, or the text of an earlier one).

  Blocks of DIALOGUES_PER_SEED samples of the seeds DIALOGUE_SEEDS, in
  order, until NUM_DIALOGUES are kept.
  """
  kept: list[samples_lib.Sample] = []
  skipped: list[str] = []
  texts: set[str] = set()
  for seed in DIALOGUE_SEEDS:
    if len(kept) == NUM_DIALOGUES:
      break
    for s in _seed_block(tokenizer, eligible, seed):
      if len(kept) == NUM_DIALOGUES:
        break
      text = s.context + s.continuation
      if s.metadata["num_tokens"] < MIN_DIALOGUE_TOKENS or text in texts:
        skipped.append(s.id + ID_SUFFIX)
        continue
      texts.add(text)
      kept.append(dataclasses.replace(
          s, id=s.id + ID_SUFFIX,
          metadata={**s.metadata, "pool": "heldout", "suite": "test"}))
  if len(kept) < NUM_DIALOGUES:
    raise ValueError(f"only {len(kept)} of {NUM_DIALOGUES} test dialogues; "
                     f"add seeds to DIALOGUE_SEEDS")
  return kept, skipped


def make_ruler_ood(tokenizer: samples_lib.TokenizerLike, length: int,
                   per_task: int) -> list[samples_lib.Sample]:
  """`per_task` samples of every ood task at `length` tokens."""
  out = []
  for task in ruler_ood.task_names():
    out += ruler_ood.generate_task(task, per_task, length, tokenizer, SEED)
  stray = [(s.id, a) for s in out for a in ruler_ood.stray_answers(s)]
  if stray:
    raise ValueError(f"answers found outside their needles: {stray[:5]}")
  return out


# ------------------------------------------------------------------- driver


def check_not_frozen(output_dir: str | Path, force: bool) -> None:
  """Fails (one line) when `output_dir` holds a manifest and not `force`."""
  manifest = Path(output_dir) / MANIFEST
  if manifest.exists() and not force:
    _cli.fail(f"{manifest} exists: the test suite is frozen; pass --force to "
              f"rebuild it")


def _ruler_ood_files(tokenizer: samples_lib.TokenizerLike
                     ) -> dict[str, tuple[list[samples_lib.Sample], dict]]:
  """{file name: (samples, how they were made)} of the ood tasks."""
  out = {}
  for length, per_task in RULER_OOD_PER_TASK.items():
    logging.info("ood RULER-style samples at %d tokens", length)
    samples = make_ruler_ood(tokenizer, length, per_task)
    out[ruler_ood_file(length)] = (samples, {
        "generator": "kvp_jax.samples.ruler_ood.generate_task",
        "tasks": ruler_ood.task_names(), "length": length, "seed": SEED,
        "num_samples_per_task": per_task})
  return out


def _dialogue_file(tokenizer: samples_lib.TokenizerLike, dev_eval: Any,
                   dev_config: str
                   ) -> dict[str, tuple[list[samples_lib.Sample], dict]]:
  """{DIALOGUES_FILE: (samples, how they were made)}."""
  logging.info("dev dialogue samples (to exclude their conversations)")
  dev = dev_dialogue_samples(dev_eval, tokenizer)
  eligible = eligible_conversations(dialogues.load_conversations(),
                                    used_conversations(dev))
  logging.info("test dialogues from %d eligible conversations",
               len(eligible.conversations))
  samples, skipped = make_dialogues(tokenizer, eligible)
  return {DIALOGUES_FILE: (samples, {
      "generator": "kvp_jax.samples.dialogues.generate_dialogues",
      "length": DIALOGUE_LENGTH, "pool": "heldout",
      "seeds": sorted({int(s.id.split("-")[2]) for s in samples}),
      "samples_per_seed": DIALOGUES_PER_SEED,
      "min_tokens": MIN_DIALOGUE_TOKENS, "skipped": skipped,
      "id_suffix": ID_SUFFIX,
      "dev_suite": {"config": dev_config,
                    "sources": dev_sources(dev_eval, "dialogues"),
                    "num_samples": len(dev)},
      "excluded_dev_conversations": len(eligible.dev_ids),
      "excluded_by_text_hash": eligible.hash_collisions,
      "eligible_conversations": len(eligible.conversations),
      "conversations_used": len(used_conversations(samples))})}


def build(output_dir: str | Path, tokenizer: samples_lib.TokenizerLike,
          dev_eval: Any, dev_config: str) -> dict[str, Any]:
  """Generates the suite, then writes its files and manifest into
  `output_dir` (nothing is written when generating fails); returns the
  manifest.

  Args:
    output_dir: where the files go.
    tokenizer: measures the lengths.
    dev_eval: the dev grid's eval config (its `suites`).
    dev_config: the file it came from, for the manifest.
  """
  made = _ruler_ood_files(tokenizer)
  made.update(_dialogue_file(tokenizer, dev_eval, dev_config))
  output_dir = Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  files = {}
  for name, (samples, generated) in made.items():
    path = samples_lib.write_samples(output_dir / name, samples)
    files[name] = {"sha256": file_sha256(path), "num_samples": len(samples),
                   "bytes": path.stat().st_size, "generated": generated}
  manifest = {
      "role": "test", "frozen": True,
      "command": f"{COMMAND} --config={dev_config}",
      "created": datetime.date.today().isoformat(),
      "python": platform.python_version(),
      "tokenizer": "Gemma 3 270M (the shipped GGUF)",
      "files": files}
  _files.atomic_write_json(output_dir / MANIFEST, manifest)
  return manifest


def main(argv: Sequence[str]) -> None:
  config_flag, output_dir_flag, force_flag = _FLAGS
  if len(argv) > 1:
    _cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  check_not_frozen(output_dir_flag.value, force_flag.value)
  if config_flag.value is None:
    _cli.fail("--config is required: the dev grid's config, "
              "experiments/heldout.py")
  # Imported here: it pulls in jax, which flag errors need not wait for.
  from kvp_jax import model  # pylint: disable=import-outside-toplevel
  manifest = build(output_dir_flag.value, model.load_tokenizer(),
                   config_flag.value.eval,
                   config_flags.get_config_filename(flags.FLAGS["config"]))
  for name, entry in manifest["files"].items():
    print(f"{Path(output_dir_flag.value) / name}: {entry['num_samples']} samples, "
          f"{entry['bytes']} bytes, sha256 {entry['sha256']}")


if __name__ == "__main__":
  _FLAGS = _define_flags()
  _cli.run(main)
