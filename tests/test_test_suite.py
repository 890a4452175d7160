"""The frozen TEST suite (experiments/test_suites/): its files match the
manifest's hashes, hold what the manifest says, fit their lengths, and share
no sample id with the dev or training sets and no conversation (by id or by
text hash) with the dev dialogue suite or the training pool."""

import collections
import json
import subprocess
import sys
from pathlib import Path

import pytest

from data_pipelines import make_test_suite
from experiments import dialogue_agents
from experiments import heldout
from experiments import ruler_agents
from kvp_jax import samples as samples_lib
from kvp_jax.samples import dialogues
from kvp_jax.samples import ruler_ood
from kvp_jax.samples import sources

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / make_test_suite.OUTPUT_DIR
RULER_FILES = {2048: "ruler_ood_2048.jsonl", 4096: "ruler_ood_4096.jsonl"}
DIALOGUES_FILE = "dialogues_test.jsonl"
MIN_SAMPLES = {"ruler_ood_2048.jsonl": 200, "ruler_ood_4096.jsonl": 100,
               DIALOGUES_FILE: 100}
MAX_BYTES = 8 * 10**6


@pytest.fixture(scope="module")
def manifest():
  return json.loads((SUITE / make_test_suite.MANIFEST).read_text())


@pytest.fixture(scope="module")
def suite():
  """The samples of every file of the suite, by file name."""
  return {name: samples_lib.read_samples(SUITE / name)
          for name in MIN_SAMPLES}


@pytest.fixture(scope="module")
def conversations():
  return {c.id: c for c in dialogues.load_conversations()}


@pytest.fixture(scope="module")
def dev_dialogues(tokenizer):
  """The dev grid's dialogue samples, rebuilt as heldout_eval() says."""
  return make_test_suite.dev_dialogue_samples(ruler_agents.heldout_eval(),
                                              tokenizer)


def _source_ids(source):
  """Ids a ruler or dialogue source gives its samples (at most)."""
  if source["kind"] == "ruler":
    return {f"{t}-{n}-{source['seed']}-{i}" for t in source["tasks"]
            for n in source["lengths"] for i in range(source["num_samples"])}
  return {f"dialogues-{n}-{source['seed']}-{i}-{source['pool']}"
          for n in source["lengths"] for i in range(source["num_samples"])}


# ------------------------------------------------------------ hash freeze


def test_manifest_lists_the_files_with_their_hashes(manifest):
  assert manifest["frozen"] is True and manifest["role"] == "test"
  assert set(manifest["files"]) == set(MIN_SAMPLES)
  assert {p.name for p in SUITE.iterdir()} == set(MIN_SAMPLES) | {
      make_test_suite.MANIFEST, "README.md"}
  for name, entry in manifest["files"].items():
    path = SUITE / name
    assert make_test_suite.file_sha256(path) == entry["sha256"], (
        f"{name} changed: the test suite is frozen")
    assert path.stat().st_size == entry["bytes"]


def test_manifest_names_the_dev_grid(manifest):
  dev = manifest["files"][DIALOGUES_FILE]["generated"]["dev_suite"]
  assert dev["sources"] == make_test_suite.dev_sources(
      ruler_agents.heldout_eval(), "dialogues")
  assert dev["config"] == "experiments/heldout.py"
  assert manifest["command"] == ("python -m data_pipelines.make_test_suite "
                                 "--config=experiments/heldout.py")


def test_the_dev_grid_is_heldout_eval():
  assert heldout.get_config().eval.suites == ruler_agents.heldout_eval().suites


def test_total_size_is_small():
  assert sum(p.stat().st_size for p in SUITE.iterdir()) < MAX_BYTES


def test_counts_match_the_manifest(manifest, suite):
  for name, samples in suite.items():
    assert len(samples) == manifest["files"][name]["num_samples"]
    assert len(samples) >= MIN_SAMPLES[name]


def test_ruler_ood_files_are_balanced_and_fit(manifest, suite, tokenizer):
  for length, name in RULER_FILES.items():
    generated = manifest["files"][name]["generated"]
    assert generated["tasks"] == ruler_ood.task_names()
    assert generated["length"] == length
    counts = collections.Counter(s.task for s in suite[name])
    assert counts == {t: generated["num_samples_per_task"]
                      for t in ruler_ood.task_names()}
    for sample in suite[name]:
      assert sample.metadata["target_length"] == length
      assert samples_lib.sample_length(sample, tokenizer) == (
          sample.metadata["num_tokens"])
      assert length - 200 <= sample.metadata["num_tokens"] <= length
      assert ruler_ood.stray_answers(sample) == []


def test_dialogues_fit_and_differ(suite, tokenizer):
  samples = suite[DIALOGUES_FILE]
  for sample in samples:
    assert sample.task == dialogues.TASK and sample.continuation
    assert sample.metadata["target_length"] == 2048
    assert samples_lib.sample_length(sample, tokenizer) == (
        sample.metadata["num_tokens"]) <= 2048
    assert sample.metadata["num_tokens"] >= (
        make_test_suite.MIN_DIALOGUE_TOKENS)
  assert len({s.context + s.continuation for s in samples}) == len(samples)
  blocks = collections.defaultdict(list)
  for sample in samples:
    blocks[sample.id.split("-")[2]] += sample.metadata["conversations"]
  for used in blocks.values():
    assert len(used) == len(set(used))


def test_a_sample_of_the_suite_is_what_the_generator_makes(suite, tokenizer):
  """The committed files came from the committed generator (a spot check
  of a dialogue-haystack sample: the reference haystack is this Python's
  pydoc_data, which another Python may word differently)."""
  sample = suite[RULER_FILES[2048]][0]
  assert sample.metadata["haystack"] == ruler_ood.DIALOGUE_HAYSTACK
  assert ruler_ood.generate_sample(sample.task, 0, 2048, tokenizer,
                                   make_test_suite.SEED) == sample


# ------------------------------------------------------------ disjointness


def test_ids_are_unique_and_not_dev_or_training_ids(suite, dev_dialogues):
  ids = [s.id for samples in suite.values() for s in samples]
  assert len(ids) == len(set(ids))
  other = {s.id for s in dev_dialogues} | make_test_suite.dev_ruler_ids(
      ruler_agents.heldout_eval())
  for config in (ruler_agents.get_config(), dialogue_agents.get_config()):
    for source in config.traces.sources:
      other |= _source_ids(dict(source))
  for suite_ in ruler_agents.heldout_eval().suites:
    for source in suite_["sources"]:
      other |= _source_ids(dict(source))
  assert len(other) > 500
  assert not set(ids) & other


def test_dialogues_text_is_that_of_their_conversations(suite, conversations):
  for sample in suite[DIALOGUES_FILE]:
    used = sample.metadata["conversations"]
    text = "\n".join("".join(dialogues.transcript_lines(conversations[c]))
                     for c in used)
    assert text.startswith(sample.context + sample.continuation)


def test_dialogues_are_heldout_and_not_dev(suite, conversations,
                                           dev_dialogues):
  dev_ids = make_test_suite.used_conversations(dev_dialogues)
  assert len(dev_ids) > 100
  taken = {make_test_suite.conversation_hash(c) for c in conversations.values()
           if c.id in dev_ids or sources.in_pool(c.id, "train")}
  test_ids = make_test_suite.used_conversations(suite[DIALOGUES_FILE])
  assert len(test_ids) >= 100
  for conversation_id in test_ids:
    assert sources.in_pool(conversation_id, "heldout")
    assert conversation_id not in dev_ids
    assert make_test_suite.conversation_hash(
        conversations[conversation_id]) not in taken


def test_frozen_suite_is_not_overwritten(tmp_path):
  (tmp_path / make_test_suite.MANIFEST).write_text("{}")
  result = subprocess.run(
      [sys.executable, "-m", "data_pipelines.make_test_suite",
       f"--output_dir={tmp_path}"], cwd=REPO, capture_output=True, text=True,
      check=False)
  assert result.returncode == 2
  assert result.stderr.strip().count("\n") == 0
  assert "frozen" in result.stderr and "--force" in result.stderr
  assert (tmp_path / make_test_suite.MANIFEST).read_text() == "{}"
