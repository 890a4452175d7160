"""GGUF conversion: the mapping round-trips, the cache is reused, and bad
files fail with messages that name the file and the problem."""

import os
import shutil

import jax
import numpy as np
import pytest

from kvp_jax import model as model_lib
from tests.model import gguf_files


@pytest.fixture()
def tiny_gguf(tmp_path):
  config = model_lib.tiny(attention_pattern=("local", "global"),
                          sliding_window=8, vocab_size=300)
  params = model_lib.init_params(config, jax.random.key(0))
  path = tmp_path / "tiny.gguf"
  gguf_files.write_gemma_gguf(path, config, params)
  return config, params, path


def test_round_trip_and_cache_reuse(tiny_gguf, tmp_path):
  config, params, path = tiny_gguf
  cache = tmp_path / "cache"
  loaded = model_lib.load_pretrained(path, config=config, cache_dir=cache)
  for (kp, want), got in zip(
      jax.tree_util.tree_flatten_with_path(params)[0],
      jax.tree_util.tree_leaves(loaded.params)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want),
                                  err_msg=jax.tree_util.keystr(kp))
  converted = list((cache / "models").iterdir())
  assert len(converted) == 1 and (converted[0] / "meta.json").is_file()
  # A second load reads the cache: it works even with the GGUF's tensors
  # unreadable, as long as the file (its identity) is unchanged.
  stamp = (converted[0] / "meta.json").stat().st_mtime_ns
  again = model_lib.load_pretrained(path, config=config, cache_dir=cache)
  assert (converted[0] / "meta.json").stat().st_mtime_ns == stamp
  assert again.fingerprint == loaded.fingerprint
  assert loaded.tokenizer.vocab_size == config.vocab_size
  assert loaded.tokenizer.decode(loaded.tokenizer.encode("abc d")) == "abc d"


def test_half_written_conversion_is_redone(tiny_gguf, tmp_path):
  config, params, path = tiny_gguf
  cache = tmp_path / "cache"
  good = model_lib.load_pretrained(path, config=config, cache_dir=cache)
  target = next((cache / "models").iterdir())
  # Simulate a conversion killed before completion: no meta.json.
  (target / "meta.json").unlink()
  shutil.rmtree(target / "params")
  again = model_lib.load_pretrained(path, config=config, cache_dir=cache)
  assert (target / "meta.json").is_file()
  np.testing.assert_array_equal(
      np.asarray(again.params["embedder"]["input_embedding"]),
      np.asarray(good.params["embedder"]["input_embedding"]))
  assert not [p for p in target.parent.iterdir() if "partial" in p.name]


def test_truncated_file(tiny_gguf, tmp_path):
  config, _, path = tiny_gguf
  cut = tmp_path / "cut.gguf"
  data = path.read_bytes()
  cut.write_bytes(data[:len(data) - 1000])
  with pytest.raises(model_lib.GGUFError, match="cut.gguf.*truncated"):
    model_lib.load_pretrained(cut, config=config, cache_dir=tmp_path / "c")
  cut.write_bytes(data[:100])
  with pytest.raises(model_lib.GGUFError, match="cut.gguf"):
    model_lib.load_pretrained(cut, config=config, cache_dir=tmp_path / "c")
  assert not (tmp_path / "c" / "models").exists() or not any(
      (tmp_path / "c" / "models").iterdir())


def test_missing_and_corrupt_file(tmp_path):
  with pytest.raises(model_lib.GGUFError, match="not found.*nope.gguf"):
    model_lib.load_pretrained(tmp_path / "nope.gguf", config=model_lib.tiny())
  junk = tmp_path / "junk.gguf"
  junk.write_bytes(os.urandom(4096))
  with pytest.raises(model_lib.GGUFError, match="junk.gguf"):
    model_lib.load_pretrained(junk, config=model_lib.tiny(),
                              cache_dir=tmp_path / "c")


def test_wrong_architecture(tmp_path):
  config = model_lib.tiny(vocab_size=300)
  params = model_lib.init_params(config, jax.random.key(0))
  path = tmp_path / "llama.gguf"
  gguf_files.write_gemma_gguf(path, config, params, arch="llama")
  with pytest.raises(model_lib.GGUFError, match="llama.gguf.*'llama'"):
    model_lib.load_pretrained(path, config=config, cache_dir=tmp_path / "c")


def test_shape_mismatch_names_field(tiny_gguf, tmp_path):
  config, _, path = tiny_gguf
  with pytest.raises(model_lib.GGUFError,
                     match="tiny.gguf: gemma3.embedding_length is 32 .* 48"):
    model_lib.load_pretrained(path, config=config.replace(width=48),
                              cache_dir=tmp_path / "c")
  with pytest.raises(model_lib.GGUFError, match="block_count"):
    model_lib.load_pretrained(path, config=config.replace(num_layers=4),
                              cache_dir=tmp_path / "c")
