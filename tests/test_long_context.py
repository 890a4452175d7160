"""experiments/long_context.py: the chunked protocol at length, dev and test
samples that never share a document, the same samples on every build."""

import re

import pytest

from experiments import long_context
from kvp_jax.samples import sources


class WordTokenizer:
  """Cheap stand-in: one token per word, digit or punctuation mark."""

  def encode(self, text, add_bos=False):
    return [2] * add_bos + [0] * len(re.findall(r"\d|[A-Za-z]+|\S", text))


def test_the_protocol_users_run_at_length():
  for split in ("dev", "test"):
    e = long_context.get_config(f"split={split}").eval
    assert e.role == split and e.protocol == "chunked"
    assert e.chunk_size == 512 and list(e.budgets) == [256, 512, 1024, 2048]
    assert e.policy == "shipped" and "roco" in e.scorers
    assert e.output_dir.endswith(f"long_context_{split}")
    assert [s["name"] for s in e.suites] == [
        f"{n}_{k}k" for k in (4, 8, 16, 32) for n in ("long_text", "ruler")]
    text, ruler = e.suites[:2]
    assert text["ratios"] == [0.125, 0.25]
    assert text["sources"][0]["lengths"] == [4096]
    assert ruler["answers"] == "where_full_right"
  assert long_context.get_config("protocol=once").eval.protocol == "once"
  e = long_context.get_config(
      "lengths=16384,8192,suites=ruler,samples=2").eval
  assert [s["name"] for s in e.suites] == ["ruler_8k", "ruler_16k"]
  assert e.suites[1]["sources"][0]["lengths"] == [16384]
  assert e.suites[1]["sources"][0]["num_samples"] == 2


@pytest.mark.parametrize("arg, words", [
    ("split=train", "split: 'train'"), ("suites=needles", "unknown"),
    ("protocol=decode", "protocol: 'decode'")])
def test_bad_arguments_are_refused(arg, words):
  with pytest.raises(ValueError, match=words):
    long_context.get_config(arg)


def _documents_samples(tmp_path, split):
  suites = long_context.suites(split, [1200, 2400], 3, ["long_text"])
  return sources.build_samples(
      [dict(s["sources"][0], source=str(tmp_path)) for s in suites],
      WordTokenizer())


def test_dev_and_test_never_share_a_document_and_rebuild_the_same(tmp_path):
  for i in range(120):
    (tmp_path / f"page{i:03d}.rst").write_text(
        "\n".join(f"Page {i} line {j}: the {j}th word of page {i}."
                  for j in range(30)) + "\n")
  dev = _documents_samples(tmp_path, "dev")
  test = _documents_samples(tmp_path, "test")
  assert len(dev) == len(test) == 6
  used = lambda ss: {d for s in ss for d in s.metadata["documents"]}
  assert used(dev) and used(test) and not used(dev) & used(test)
  assert {s.id for s in dev}.isdisjoint(s.id for s in test)
  assert _documents_samples(tmp_path, "dev") == dev
  assert _documents_samples(tmp_path, "test") == test
  # The same scored continuation at every length (split at a line start).
  for s in dev + test:
    n = len(WordTokenizer().encode(s.continuation))
    assert 256 - 20 <= n <= 256 + 20, (s.id, n)
    assert s.metadata["num_tokens"] <= s.metadata["target_length"]


def test_a_continuation_as_long_as_the_sample_is_refused():
  source = {"kind": "documents", "source": "pydoc", "lengths": [400],
            "num_samples": 1, "continuation_tokens": 256}
  with pytest.raises(ValueError, match="continuation_tokens 256 is not in"):
    sources.build_samples([source], WordTokenizer())
