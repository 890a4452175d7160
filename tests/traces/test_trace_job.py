"""The trace job and store: resumable, idempotent, refuses other settings."""

import json

import numpy as np
import pytest

from kvp_jax import samples as samples_lib
from experiments import common
from kvp_jax import model as model_lib
from kvp_jax import data as data_lib
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
  # point: a half-written temporary commit file, never read, then removed.
  torn = tmp_path / "b" / "commits" / ".000000099.json.x1.tmp"
  torn.parent.mkdir()
  torn.write_text('[{"index": 99, "torn": true')
  resumed = traces_lib.generate_traces(model, cfg, tmp_path / "b",
                                      samples=samples, progress=False)
  _assert_same(_contents(whole), _contents(resumed))
  assert not torn.parent.exists()
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


def test_each_source_can_split_its_traces_its_own_way(tiny_gemma_vocab,
                                                      tmp_path):
  """One store of traces at their true split (the section's 0 random
  splits) and traces with 2 random split points each (their source's own):
  the first keep one split point and say so, every slot they do not use
  repeats the true split, and the input pipeline reads each record's own
  split points only."""
  tok = tiny_gemma_vocab.tokenizer
  samples = _samples(8)
  true_only = [s for i, s in enumerate(samples) if i % 2 == 0]
  random = [s for i, s in enumerate(samples) if i % 2 == 1]
  paths = [samples_lib.write_samples(tmp_path / f"{n}.jsonl", group)
           for n, group in (("true", true_only), ("random", random))]
  cfg = _cfg(num_random_splits=0, sources=[
      {"kind": "jsonl", "paths": [str(paths[0])]},
      {"kind": "jsonl", "paths": [str(paths[1])], "num_random_splits": 2,
       "min_prompt_length": 30}])
  store = traces_lib.generate_traces(tiny_gemma_vocab, cfg, tmp_path / "s",
                                    progress=False)
  assert store.layout.num_splits == 3
  by_id = {r.id: r for r in store.records}
  assert len(by_id) == 8
  # The random source alone, split the same way, in a store of its own.
  alone = traces_lib.generate_traces(
      tiny_gemma_vocab, _cfg(min_prompt_length=30), tmp_path / "alone",
      samples=random, progress=False)
  for s in true_only:
    rec = by_id[s.id]
    data = store.read(rec.index)
    assert rec.num_splits == 1 and rec.split_settings is None
    assert data["split_points"].tolist() == [rec.prompt_length] * 3
    for j in (1, 2):
      np.testing.assert_array_equal(data["importance"][:, :, j],
                                    data["importance"][:, :, 0])
  for rec in alone.records:
    mixed = by_id[rec.id]
    assert mixed.num_splits is None and mixed.split_settings == [2, 30]
    got, want = store.read(mixed.index), alone.read(rec.index)
    np.testing.assert_array_equal(got["split_points"], want["split_points"])
    assert np.all(got["split_points"][1:] >= 30)
    np.testing.assert_allclose(got["importance"], want["importance"],
                               rtol=1e-5, atol=1e-6)
  lines = (tmp_path / "s" / "records.jsonl").read_text().splitlines()
  assert sum('"num_splits"' in line for line in lines) == len(true_only)

  def split_points(mode):
    cfg_in = data_lib.InputConfig(batch_size=2, buckets=(256,),
                                  split_mode=mode)
    out = {}
    for e in data_lib.elements(store, "train", cfg_in)[0]:
      out.setdefault(store.records[e.record].id, []).append(e.prompt_length)
    return out

  every, randoms = split_points("all"), split_points("random")
  for sid, points in every.items():
    rec = by_id[sid]
    own = store.read(rec.index)["split_points"][:rec.num_splits or 3]
    assert points == own.tolist()
    assert randoms[sid] == (own[1:] if len(own) > 1 else own).tolist()
  assert {sid for sid in every if by_id[sid].num_splits == 1} == {
      s.id for s in true_only if by_id[s.id].split == "train"}


def test_split_settings_are_checked():
  section = _cfg(num_random_splits=1, min_prompt_length=8)
  assert traces_lib.split_settings(section) == (1, 8)
  assert traces_lib.split_settings(
      section, {"kind": "jsonl", "num_random_splits": 4}) == (4, 8)
  with pytest.raises(ValueError, match="num_random_splits=-1"):
    traces_lib.split_settings(section, {"num_random_splits": -1})
  with pytest.raises(ValueError, match="4 per-prompt settings for 2"):
    traces_lib.record_traces(None, [[2, 5], [2, 6]], None, max_new_tokens=1,
                             num_random_splits=[1, 1, 1, 1])


def test_traces_recorded_the_same_way_are_copied_not_recorded(
    tiny_gemma_vocab, tmp_path, monkeypatch):
  """A store of two sources built from the stores of each: the traces
  they hold are copied (nothing is recorded for them), equal to the
  originals; a store recorded otherwise is refused, naming the setting."""
  model, samples = tiny_gemma_vocab, _samples(8)
  paths = [samples_lib.write_samples(tmp_path / f"{n}.jsonl", samples[k::2])
           for n, k in (("a", 0), ("b", 1))]
  source_a = {"kind": "jsonl", "paths": [str(paths[0])]}
  source_b = {"kind": "jsonl", "paths": [str(paths[1])],
              "num_random_splits": 2, "min_prompt_length": 30}
  only_a = traces_lib.generate_traces(
      model, _cfg(num_random_splits=0, sources=[source_a]), tmp_path / "a",
      progress=False)
  only_b = traces_lib.generate_traces(
      model, _cfg(min_prompt_length=30, sources=[dict(source_b)]),
      tmp_path / "b", progress=False)
  recorded = []
  real = traces_lib._job._record_batch
  monkeypatch.setattr(traces_lib._job, "_record_batch", lambda m, c, b: (
      recorded.extend(p.sample.id for p in b) or real(m, c, b)))
  both = _cfg(num_random_splits=0, sources=[source_a, source_b],
              reuse=(str(tmp_path / "a"), str(tmp_path / "b")))
  store = traces_lib.generate_traces(model, both, tmp_path / "both",
                                    progress=False)
  assert recorded == [] and store.num_records == 8
  originals = {r.id: (s, r) for s in (only_a, only_b) for r in s.records}
  for rec in store.records:
    source_store, orig = originals[rec.id]
    assert (rec.split, rec.prompt_length) == (orig.split, orig.prompt_length)
    got, want = store.trace(rec.index), source_store.trace(orig.index)
    for name in ("tokens", "split_points", "importance", "keys", "values"):
      np.testing.assert_array_equal(getattr(got, name), getattr(want, name),
                                    err_msg=name)
  # Copied or recorded, the store is the same (up to float rounding: the
  # recorded batches mix the sources).
  fresh = traces_lib.generate_traces(
      model, _cfg(num_random_splits=0, sources=[source_a, source_b]),
      tmp_path / "fresh", progress=False)
  assert [r.to_json() for r in fresh.records] == [
      r.to_json() for r in store.records]
  for rec in store.records:
    np.testing.assert_allclose(store.trace(rec.index).importance,
                               fresh.trace(rec.index).importance,
                               rtol=1e-5, atol=1e-6)
  # Only what was recorded the same way is copied: b's traces have random
  # split points, which a run that wants none records again.
  recorded.clear()
  traces_lib.generate_traces(
      model, _cfg(num_random_splits=0, sources=[source_a, dict(
          source_b, num_random_splits=0)],
          reuse=(str(tmp_path / "a"), str(tmp_path / "b"))),
      tmp_path / "other", progress=False)
  assert sorted(recorded) == sorted(s.id for s in samples[1::2])
  with pytest.raises(ValueError, match="max_new_tokens"):
    traces_lib.generate_traces(
        model, _cfg(max_new_tokens=6, sources=[source_a],
                    reuse=(str(tmp_path / "a"),)),
        tmp_path / "refused", progress=False)
  # A store of both is itself reusable: its records say how each was split.
  recorded.clear()
  again = traces_lib.generate_traces(
      model, _with(both, reuse=(str(tmp_path / "both"),)),
      tmp_path / "again", progress=False)
  assert recorded == [] and again.num_records == 8
  # A rerun whose source splits otherwise is refused, naming the trace.
  with pytest.raises(traces_lib.StoreError, match="was recorded with"):
    traces_lib.generate_traces(
        model, _cfg(num_random_splits=0, sources=[source_a, dict(
            source_b, min_prompt_length=40)]),
        tmp_path / "both", progress=False)


def _with(cfg, **overrides):
  out = cfg.copy_and_resolve_references()
  out.update(overrides)
  return out
