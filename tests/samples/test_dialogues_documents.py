"""Perplexity samples from dialogues and documents: what they hold, how they
split, their lengths, determinism, and the document sources."""

import re

import pytest

from kvp_jax.samples import dialogues
from kvp_jax.samples import documents
from data_pipelines import make_samples
from kvp_jax import samples as samples_lib


class WordTokenizer:
  """Cheap stand-in: one token per word, digit or punctuation mark."""

  def encode(self, text, add_bos=False):
    return [2] * add_bos + [0] * len(re.findall(r"\d|[A-Za-z]+|\S", text))


@pytest.fixture(scope="module")
def conversations():
  return dialogues.load_conversations()


def _transcript(conversations_by_id, ids):
  return "\n".join("".join(dialogues.transcript_lines(conversations_by_id[i]))
                   for i in ids)


def test_conversations_are_clean_transcripts(conversations):
  assert len(conversations) > 3000
  ids = [c.id for c in conversations]
  assert ids == sorted(ids) and len(set(ids)) == len(ids)
  for conversation in conversations[:500]:
    speakers = [speaker for speaker, _ in conversation.turns]
    assert speakers[0] == "A" and len(speakers) >= 2
    assert all(a != b for a, b in zip(speakers, speakers[1:]))
    assert set(speakers) <= {"A", "B"}
    for line in dialogues.transcript_lines(conversation):
      assert re.fullmatch(r"[AB]: \S.*\n", line)
      assert "\n" not in line[:-1]


def test_dialogue_samples(tokenizer, conversations):
  samples = dialogues.generate_dialogues(4, 1024, tokenizer, seed=5,
                                         conversations=conversations)
  by_id = {c.id: c for c in conversations}
  seen = set()
  assert [s.id for s in samples] == [f"dialogues-1024-5-{i}" for i in range(4)]
  for sample in samples:
    assert samples_lib.Sample.from_dict(sample.to_dict()) == sample
    assert sample.task == "dialogues" and sample.answers == []
    assert sample.question == sample.answer_prefix == ""
    assert samples_lib.prompt_text(sample) == sample.context
    # Context and continuation are the start of the packed transcripts,
    # split before a turn of the conversation the context ends in.
    used = sample.metadata["conversations"]
    text = _transcript(by_id, used)
    assert text.startswith(sample.context + sample.continuation)
    assert sample.context.endswith("\n") and not sample.context.endswith(
        "\n\n")
    assert re.match(r"[AB]: ", sample.continuation)
    assert sample.context.rsplit("\n", 2)[-2][:1] != sample.continuation[:1]
    # Lengths: separate token counts, BOS, under the target.
    assert sample.max_new_tokens == tokenizer.count(sample.continuation)
    length = samples_lib.sample_length(sample, tokenizer)
    assert length == sample.metadata["num_tokens"]
    assert 1024 * 0.85 <= length <= 1024
    assert 0.15 <= sample.max_new_tokens / length <= 0.35
    assert not seen & set(used)  # no conversation reused across samples
    seen.update(used)


def test_dialogues_are_seeded(conversations):
  tok = WordTokenizer()
  run = lambda seed, n=3: [s.to_dict() for s in dialogues.generate_dialogues(
      n, 700, tok, seed, conversations=conversations)]
  assert run(1) == run(1)
  assert all(a["context"] != b["context"] for a, b in zip(run(1), run(2)))
  assert run(1, n=2) == run(1)[:2]


def test_continuation_fraction_is_honoured(conversations):
  tok = WordTokenizer()
  for fraction in (0.1, 0.5):
    (sample,) = dialogues.generate_dialogues(1, 2000, tok, 0,
                                             continuation_fraction=fraction,
                                             conversations=conversations)
    share = sample.max_new_tokens / sample.metadata["num_tokens"]
    assert abs(share - fraction) < 0.08
  with pytest.raises(ValueError, match="continuation_fraction"):
    dialogues.generate_dialogues(1, 2000, tok, 0, continuation_fraction=1.0,
                                 conversations=conversations)


def test_pydoc_documents():
  docs = documents.pydoc_documents()
  assert len(docs) > 50
  assert [d.name for d in docs] == sorted(d.name for d in docs)
  assert all(d.text and d.text == d.text.strip() for d in docs)


def test_document_samples(tokenizer):
  docs = documents.pydoc_documents()
  by_name = {d.name: d for d in docs}
  samples = documents.generate_documents(docs, 3, 1024, tokenizer, seed=2,
                                         task="documents_pydoc")
  assert len(samples) == 3
  for sample in samples:
    assert samples_lib.Sample.from_dict(sample.to_dict()) == sample
    assert sample.task == "documents_pydoc"
    assert sample.metadata["metric"] == "perplexity"
    text = "\n\n".join(by_name[n].text for n in sample.metadata["documents"])
    assert text.startswith(sample.context + sample.continuation)
    assert sample.context.endswith("\n")
    assert sample.continuation[:1].strip()  # starts at a non-blank line
    assert sample.max_new_tokens == tokenizer.count(sample.continuation)
    length = samples_lib.sample_length(sample, tokenizer)
    assert length == sample.metadata["num_tokens"]
    assert 1024 * 0.9 <= length <= 1024
  starts = [s.metadata["documents"][0] for s in samples]
  assert len(set(starts)) == 3


def test_documents_are_seeded():
  docs = documents.pydoc_documents()
  tok = WordTokenizer()
  run = lambda seed: [s.to_dict() for s in documents.generate_documents(
      docs, 2, 800, tok, seed)]
  assert run(4) == run(4)
  assert all(a["context"] != b["context"] for a, b in zip(run(4), run(5)))


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")


def test_directory_documents(tmp_path):
  _write(tmp_path / "b.md", "# Title\n\nSome *markdown*.\r\n")
  _write(tmp_path / "a.txt", "Plain text.\n")
  _write(tmp_path / "sub" / "c.rst", "Heading\n=======\n\nBody.\n")
  _write(tmp_path / "sub" / "d.rst.txt", "Sphinx source.\n")
  _write(tmp_path / "ignored.py", "print('no')\n")
  _write(tmp_path / "empty.txt", "  \n")
  docs = documents.directory_documents(tmp_path)
  assert [d.name for d in docs] == ["a.txt", "b.md", "sub/c.rst",
                                    "sub/d.rst.txt"]
  assert docs[1].text == "# Title\n\nSome *markdown*."
  assert documents.load_documents(str(tmp_path)) == docs
  with pytest.raises(FileNotFoundError):
    documents.directory_documents(tmp_path / "missing")


def test_python_doc_source(tmp_path):
  assert documents.python_doc_documents(tmp_path / "not-installed") == []
  _write(tmp_path / "library" / "os.rst.txt", ":mod:`os` --- Misc\n\nText.\n")
  docs = documents.python_doc_documents(tmp_path)
  assert [d.name for d in docs] == ["library/os.rst.txt"]
  if not documents.PYTHON_DOC_ROOT.is_dir():
    assert documents.load_documents("python_doc") == []


def test_long_lines_are_split_and_packed(tmp_path):
  paragraph = " ".join(f"word{i}." for i in range(3000))
  pieces = documents.text_pieces(paragraph + "\n", max_chars=100)
  assert "".join(pieces) == paragraph + "\n"
  assert max(map(len, pieces)) <= 100
  docs = [documents.Document("one-line.md", paragraph)]
  (sample,) = documents.generate_documents(docs, 1, 500, WordTokenizer(), 0)
  assert paragraph.startswith(sample.context + sample.continuation)
  assert samples_lib.sample_length(sample, WordTokenizer()) <= 500


def test_too_little_text_gives_no_sample():
  docs = [documents.Document("tiny", "One line only.")]
  assert documents.generate_documents(docs, 2, 500, WordTokenizer(), 0) == []
  assert documents.generate_documents([], 2, 500, WordTokenizer(), 0) == []


def test_make_samples_dialogues_and_documents(tmp_path):
  source = tmp_path / "my docs"
  for i in range(3):
    _write(source / f"doc{i}.txt",
           "\n".join(f"Line {j} of document {i}." for j in range(200)))
  out = tmp_path / "out"
  paths = make_samples.make_samples(
      out, tasks=[], lengths=[512], num_samples=2, seed=0,
      tokenizer=WordTokenizer(), dialogue=True,
      document_sources=["pydoc", "python_doc", str(source)], progress=False)
  names = sorted(p.name for p in paths)
  expected = ["dialogues_512.jsonl", "documents_my_docs_512.jsonl",
              "documents_pydoc_512.jsonl"]
  if documents.PYTHON_DOC_ROOT.is_dir():
    expected.append("documents_python_doc_512.jsonl")
  assert names == sorted(expected)
  for path in paths:
    samples = samples_lib.read_samples(path)
    assert len(samples) == 2
    assert all(s.continuation for s in samples)
