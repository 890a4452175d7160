"""An episodic suite's generated conversations: one spec as before, a list
of specs (one per length) and disjoint_from share no source dialogue."""

import pytest

from kvp_jax import model as model_lib
from kvp_jax.evaluation import _conversations
from kvp_jax.samples import long_conversations


@pytest.fixture(scope="module")
def tokenizer():
  return model_lib.load_model(
      {"name": "tiny_gemma_vocab", "source": "random"}).tokenizer


def _sources(samples):
  return {x for s in samples for x in s.metadata["sources"]}


def _ids(samples):
  return {s.metadata["conversation_id"] for s in samples}


def test_one_spec_builds_what_the_generator_builds(tokenizer):
  spec = {"num_conversations": 2, "target_length": 700, "seed": 5,
          "num_facts": 3}
  got = _conversations.generated_conversations(
      {"conversations": spec}, tokenizer)
  want = long_conversations.generate_long_conversations(
      2, 700, tokenizer, 5, num_facts=3)
  assert got == want


def test_specs_and_disjoint_from_share_no_dialogue(tokenizer):
  dev = {"num_conversations": 3, "target_length": 700, "seed": 5,
         "num_facts": 3}
  specs = [dict(dev, num_conversations=2, seed=6),
           dict(dev, num_conversations=2, seed=6, target_length=900)]
  alone = [long_conversations.generate_long_conversations(
      s["num_conversations"], s["target_length"], tokenizer, s["seed"],
      num_facts=3) for s in specs]
  # The same seed draws the same dialogues first at either length ...
  assert _sources(alone[0]) & _sources(alone[1])
  test = _conversations.generated_conversations(
      {"conversations": specs, "disjoint_from": [dev]}, tokenizer)
  by_length = [[s for s in test if s.metadata["target_length"] == n]
               for n in (700, 900)]
  assert [len(_ids(b)) for b in by_length] == [2, 2]
  # ... which a list of specs does not reuse, nor the dev conversations'.
  assert not _sources(by_length[0]) & _sources(by_length[1])
  dev_built = _conversations.generated_conversations(
      {"conversations": dev}, tokenizer)
  assert not _sources(dev_built) & _sources(test)
  assert not _ids(dev_built) & _ids(test)


def test_two_specs_of_one_length_and_seed_are_refused(tokenizer):
  spec = {"num_conversations": 1, "target_length": 700, "seed": 5}
  with pytest.raises(ValueError, match="same ids"):
    _conversations.generated_conversations(
        {"conversations": [spec, dict(spec, num_facts=2)]}, tokenizer)
