"""The trace job and store: resumable, idempotent, refuses other settings."""

import json

import numpy as np
import pytest

from kvp_jax import samples as samples_lib
from experiments import common
from kvp_jax import model as model_lib
from kvp_jax import traces as traces_lib


@pytest.fixture(scope="module")
def tiny_gemma_vocab():
  """A random tiny decoder over Gemma's vocabulary (real tokenizer)."""
  return model_lib.load_model({"name": "tiny_gemma_vocab", "source": "random"})


def _samples(n=7):
  rng = np.random.default_rng(0)
  words = "alpha beta gamma delta kappa omega river stone cloud".split()
  out = []
  for i in range(n):
    text = " ".join(rng.choice(words, size=int(rng.integers(20, 90))))
    out.append(samples_lib.Sample(
        id=f"s{i}", task="toy" if i % 2 else "toy2", context=text,
        question="Q?", answer_prefix=" A:", answers=["x"], max_new_tokens=4,
        continuation="the end of it"))
  return out


def _cfg(**overrides):
  cfg = common.traces_config(max_new_tokens=5, batch_size=2, pad_multiple=64,
                             max_length=256, num_random_splits=2,
                             min_prompt_length=8, with_kv=True,
                             kv_dtype="float32")
  cfg.update(overrides)
  return cfg


def _contents(store):
  out = {"records": [r.__dict__ for r in store.records]}
  for r in store.records:
    for k, v in store.read(r.index).items():
      out[f"{r.index}/{k}"] = np.asarray(v)
  return out


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for k in a:
    if k == "records":
      assert a[k] == b[k]
    else:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_store_holds_what_was_recorded(tiny_gemma_vocab, tmp_path):
  model = tiny_gemma_vocab
  cfg = _cfg()
  store = traces_lib.generate_traces(model, cfg, tmp_path / "s",
                                    samples=_samples(3), progress=False)
  assert store.num_records == 3
  again = traces_lib.TraceStore.open(tmp_path / "s")
  plan = traces_lib.plan_batches(_samples(3), model.tokenizer, cfg)
  by_id = {p.sample.id: p for batch in plan for p in batch}
  for rec in again.records:
    data = again.read(rec.index)
    prompt = by_id[rec.id].prompt
    assert data["tokens"][:rec.prompt_length].tolist() == list(prompt)
    assert data["split_points"][0] == rec.prompt_length
    assert data["importance"].shape == (3, 2, 3, rec.length)
    assert data["keys"].shape == (3, 2, rec.length, 16)
    # Importance is zero at and after each split point, positive before it
    # for the global layer (the one without a window).
    for s, split in enumerate(data["split_points"]):
      assert np.all(data["importance"][:, :, s, split:] == 0)
      assert np.all(data["importance"][2, :, s, :split] > 0)
  # Reading some layers only.
  part = again.read(0, layers=slice(1, 3), fields=("keys",))
  np.testing.assert_array_equal(part["keys"], again.read(0)["keys"][1:3])
  meta = json.loads((tmp_path / "s" / "metadata.json").read_text())
  assert meta["model"]["fingerprint"] == model.fingerprint
  assert meta["layout"]["num_splits"] == 3


def test_interrupted_run_equals_uninterrupted(tiny_gemma_vocab, tmp_path):
  model, cfg, samples = tiny_gemma_vocab, _cfg(), _samples()
  whole = traces_lib.generate_traces(model, cfg, tmp_path / "a",
                                    samples=samples, progress=False)
  part = traces_lib.generate_traces(model, cfg, tmp_path / "b",
                                   samples=samples, max_batches=2,
                                   progress=False)
  assert 0 < part.num_records < whole.num_records
  # A kill after the arrays but before the commit leaves junk past the commit
  # point: an extra log line that must be ignored and truncated.
  with open(tmp_path / "b" / "records.jsonl", "a") as f:
    f.write('{"index": 99, "torn": true\n')
  resumed = traces_lib.generate_traces(model, cfg, tmp_path / "b",
                                      samples=samples, progress=False)
  _assert_same(_contents(whole), _contents(resumed))
  # A finished job does nothing: no file changes.
  stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "b").rglob("*")}
  traces_lib.generate_traces(model, cfg, tmp_path / "b", samples=samples,
                            progress=False)
  assert stamps == {p: p.stat().st_mtime_ns
                    for p in (tmp_path / "b").rglob("*")}


def test_other_settings_are_refused(tiny_gemma_vocab, tmp_path):
  model, samples = tiny_gemma_vocab, _samples(2)
  traces_lib.generate_traces(model, _cfg(), tmp_path / "s", samples=samples,
                            progress=False)
  with pytest.raises(traces_lib.StoreError,
                     match="max_new_tokens: store has 5, this run has 6"):
    traces_lib.generate_traces(model, _cfg(max_new_tokens=6), tmp_path / "s",
                              samples=samples, progress=False)
  other = model_lib.load_model({"name": "tiny_gemma_vocab", "source": "random",
                                "seed": 1})
  with pytest.raises(traces_lib.StoreError, match="fingerprint"):
    traces_lib.generate_traces(other, _cfg(), tmp_path / "s", samples=samples,
                              progress=False)


def test_bad_inputs(tiny_gemma_vocab, tmp_path):
  with pytest.raises(ValueError, match="exceed traces.max_length"):
    traces_lib.generate_traces(tiny_gemma_vocab, _cfg(max_length=40),
                              tmp_path / "s", samples=_samples(2),
                              progress=False)
  with pytest.raises(traces_lib.StoreError, match="not a trace store"):
    traces_lib.TraceStore.open(tmp_path)
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"id": "a"}\n')
  cfg = _cfg(sources=[{"kind": "jsonl", "paths": [str(bad)]}])
  with pytest.raises(samples_lib.SampleError, match="bad.jsonl:1"):
    traces_lib.generate_traces(tiny_gemma_vocab, cfg, tmp_path / "t",
                              progress=False)


def test_reference_continuations(tiny_gemma_vocab, tmp_path):
  store = traces_lib.generate_traces(
      tiny_gemma_vocab, _cfg(continuation="reference"), tmp_path / "s",
      samples=_samples(2), progress=False)
  tok = tiny_gemma_vocab.tokenizer
  for rec in store.records:
    data = store.read(rec.index)
    cont = data["tokens"][rec.prompt_length:].tolist()
    assert cont == tok.encode("the end of it")[:5]


def test_the_target_is_in_the_store_settings_only_when_not_the_papers():
  section = common.base_config().traces
  assert "target" not in traces_lib.recording_settings(section)
  section.target = "value_weighted"
  assert traces_lib.recording_settings(section)["target"] == "value_weighted"
  section.target = "nope"
  with pytest.raises(ValueError, match="traces.target='nope'"):
    traces_lib.generate_traces(None, section, "unused")
