"""The grain pipeline: contents, shapes, buckets, and iterator state."""

import numpy as np
import pytest

from kvp_jax import samples as samples_lib
from experiments import common
from kvp_jax import data as data_lib
from kvp_jax import model as model_lib
from kvp_jax import traces as traces_lib


@pytest.fixture(scope="module")
def store(tmp_path_factory):
  model = model_lib.load_model({"name": "tiny_gemma_vocab", "source": "random"})
  rng = np.random.default_rng(0)
  samples = [samples_lib.Sample(
      id=f"s{i}", task="toy", context=" ".join(
          rng.choice(["ab", "cd", "ef", "gh"], size=int(rng.integers(30, 140)))),
      question="", answer_prefix="", answers=[], max_new_tokens=4)
             for i in range(16)]
  cfg = common.traces_config(max_new_tokens=4, batch_size=4, pad_multiple=64,
                             max_length=512, num_random_splits=2,
                             min_prompt_length=24, kv_dtype="float32",
                             split_fractions=(0.75, 0.25, 0.0))
  path = tmp_path_factory.mktemp("store") / "traces"
  return traces_lib.generate_traces(model, cfg, path, samples=samples,
                                   progress=False)


def _cfg(**kw):
  defaults = dict(batch_size=3, buckets=(64, 128, 256), split_mode="all",
                  seed=1)
  defaults.update(kw)
  return data_lib.InputConfig(**defaults)


def test_examples_match_the_store(store):
  cfg = _cfg()
  reader = data_lib.ReadElement(store, cfg)
  elems, dropped = data_lib.elements(store, "train", cfg)
  assert dropped == 0
  assert len(elems) == 3 * len(store.records_in("train"))
  for e in elems[:6]:
    ex = reader.map(e)
    rec = store.read(e.record)
    p = e.prompt_length
    assert p == rec["split_points"][e.split]
    assert e.bucket == min(b for b in cfg.buckets if b >= p)
    a = 3 * 2                                        # layers x KV heads
    assert ex["keys"].shape == (a, e.bucket, 16)
    np.testing.assert_array_equal(ex["keys"][:, :p],
                                  rec["keys"].reshape(a, -1, 16)[:, :p])
    assert np.all(ex["keys"][:, p:] == 0)
    np.testing.assert_array_equal(
        ex["importance"][:, :p],
        rec["importance"][:, :, e.split].reshape(a, -1)[:, :p])
    np.testing.assert_array_equal(ex["tokens"][:p], rec["tokens"][:p])
    valid = np.flatnonzero(ex["valid"])
    assert valid[0] == 4 and valid[-1] == p - 17
    assert ex["context_length"] == p


def test_layers_subset(store):
  full = data_lib.ReadElement(store, _cfg())
  part = data_lib.ReadElement(store, _cfg(layers=(1, 3)))
  e = data_lib.elements(store, "train", _cfg())[0][0]
  np.testing.assert_array_equal(part.map(e)["keys"], full.map(e)["keys"][2:])


def test_batches_have_bucket_shapes(store):
  it = iter(data_lib.train_dataset(store, _cfg()))
  shapes = set()
  for _ in range(12):
    batch = next(it)
    b, a, t, h = batch["keys"].shape
    assert (b, a, h) == (3, 6, 16) and t in (64, 128, 256)
    assert batch["valid"].shape == (3, t)
    assert np.all(batch["context_length"] <= t)
    shapes.add(t)
  assert len(shapes) >= 2


@pytest.mark.parametrize("workers", [0, 2])
def test_restored_iterator_yields_the_same_batches(store, workers):
  ds = data_lib.train_dataset(store, _cfg(num_workers=workers))
  it = iter(ds)
  for _ in range(4):
    next(it)
  state = it.get_state()
  want = [next(it) for _ in range(3)]
  again = iter(data_lib.train_dataset(store, _cfg(num_workers=workers)))
  again.set_state(state)
  got = [next(again) for _ in range(3)]
  for w, g in zip(want, got):
    for k in w:
      np.testing.assert_array_equal(w[k], g[k], err_msg=k)
  # A different seed gives a different order.
  other = iter(data_lib.train_dataset(store, _cfg(seed=7)))
  assert any(not np.array_equal(next(other)["record"], w["record"])
             for w in [next(iter(ds))] * 1 + want)


def test_eval_batches_cover_each_element_once(store):
  cfg = _cfg(split_mode="true")
  seen = []
  for batch in data_lib.eval_batches(store, cfg, split="validation"):
    seen += batch["record"][batch["weight"] > 0].tolist()
  assert sorted(seen) == sorted(r.index for r in store.records_in("validation"))


def test_bad_config(store):
  with pytest.raises(ValueError, match="split_mode"):
    data_lib.InputConfig(split_mode="sometimes")
  with pytest.raises(ValueError, match="no 'train' elements"):
    data_lib.train_dataset(store, _cfg(buckets=(8,)))
