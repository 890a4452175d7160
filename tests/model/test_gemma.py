"""The shipped Gemma 3 270M: tokenizer, llama.cpp perplexity, cached decoding
across the sliding window, and the command lines."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import inference
from kvp_jax import model as model_lib

GPL3 = "/usr/share/common-licenses/GPL-3"
LLAMA_CPP_PERPLEXITY = 15.79   # llama.cpp, same GGUF, same tokens (README).


def test_tokenizer_reference_ids(tokenizer):
  ids = [9259, 1902, 236764, 672, 563, 496, 1594, 236761]
  assert tokenizer.encode("Hello world, this is a test.") == ids
  assert tokenizer.encode("Hello world, this is a test.", add_bos=True) == [
      model_lib.BOS_ID] + ids
  assert tokenizer.encode("x", add_eos=True)[-1] == model_lib.EOS_ID
  assert tokenizer.processor.bos_id() == 2 and tokenizer.processor.eos_id() == 1
  assert tokenizer.processor.pad_id() == 0 and tokenizer.processor.unk_id() == 3


@pytest.mark.parametrize("text", [
    "The quick brown fox jumps over the lazy dog.",
    "def f(x):\n    return {'a': [x ** 2 for _ in range(3)]}  # comment\n",
    "Ünïcödé: 日本語のテキスト, Ελληνικά, עברית, русский",
    "emoji 🤖🎉👩‍👩‍👧 and symbols ∑∫√ ™",
    "  runs   of\t\twhitespace \n\n\n   and\r\nCRLF  ",
    "digits 1234567890 and 3.14159",
])
def test_tokenizer_round_trip(tokenizer, text):
  ids = tokenizer.encode(text)
  assert tokenizer.decode(ids) == text
  assert tokenizer.decode([model_lib.BOS_ID] + ids + [model_lib.EOS_ID]) == text


def test_tokenizer_batch(tokenizer):
  texts = ["one", "two words", "three   spaced words"]
  batch = tokenizer.encode_batch(texts, add_bos=True)
  assert batch == [tokenizer.encode(t, add_bos=True) for t in texts]
  assert tokenizer.decode_batch(batch) == texts
  assert all(len(tokenizer.encode(t)) == tokenizer.count(t) for t in texts)


def test_cached_decoding_crosses_the_window(gemma):
  """Token-by-token decoding through a ring-buffer cache gives the logits of a
  full forward, across the 512-token sliding-window boundary."""
  text = open(GPL3, encoding="utf-8").read()
  ids = jnp.asarray(gemma.tokenizer.encode(text, add_bos=True)[:524])[None]
  t, start = ids.shape[1], 500
  pos = jnp.arange(t, dtype=jnp.int32)[None]
  caps = model_lib.layer_capacities(gemma.config, t)
  assert caps[0] == 512 < t and caps[5] == t
  full = jax.jit(lambda p, x, q: model_lib.Decoder(gemma.config).apply(
      {"params": p}, x, q, logits_at=jnp.arange(start - 1, t)[None]).logits)(
          gemma.params, ids, pos)
  logits, cache, _ = inference.prefill(gemma.config, gemma.params,
                                       ids[:, :start], pos[:, :start], caps)
  steps = [logits]
  for i in range(start, t):
    logits, cache, _ = inference.extend(gemma.config, gemma.params, cache,
                                        ids[:, i:i + 1], pos[:, i:i + 1])
    steps.append(logits)
  got = jnp.stack(steps, axis=1)
  diff = float(jnp.max(jnp.abs(got - full)))
  assert diff < 1e-3, diff


def _run(*args, timeout=600):
  proc = subprocess.run([sys.executable, "-m", *args], capture_output=True,
                        text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_long_range_copying_beyond_the_reference_length(gemma):
  """The llama.cpp reference covers 1,100 tokens. Past it, the model must
  still read far back: a 200-token passage repeated after ~2,000 tokens of
  filler (far outside the 512-token windows, so only the global layers can
  reach it) is predicted almost perfectly the second time, and far better
  than the first time."""
  tok = gemma.tokenizer
  text = open(GPL3, encoding="utf-8").read()
  passage = tok.encode(text)[3000:3200]
  filler = tok.encode("The grass is green. The sky is blue. The sun is "
                      "yellow. Here we go. There and back again.\n") * 80
  ids = [model_lib.BOS_ID] + passage + filler + passage
  assert len(ids) > 2200
  ll = inference.sequence_log_likelihood(gemma, ids, skip=0)
  n = len(passage)
  first = -float(np.mean(ll[10:n - 1]))          # predictions of copy 1
  second = -float(np.mean(ll[-(n - 10):]))       # predictions of copy 2
  assert second < 0.2, (first, second)
  assert second < first / 10, (first, second)


def test_perplexity_matches_llama_cpp():
  proc = _run("kvp_jax.perplexity", f"--text_file={GPL3}", "--max_tokens=1100",
              "--skip=512")
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["num_tokens"] == 587
  assert abs(result["perplexity"] / LLAMA_CPP_PERPLEXITY - 1) < 0.01, result


def test_perplexity_bad_input(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "kvp_jax.perplexity",
       f"--text_file={tmp_path / 'missing.txt'}"],
      capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and "missing.txt" in proc.stderr


def test_generate_cli():
  proc = _run("kvp_jax.generate", "--prompt=The capital of France is",
              "--prompt=def fibonacci(n):", "--max_new_tokens=32")
  out = proc.stdout
  france, code = out.split("=== 'def fibonacci(n):'")
  completion = france.split("The capital of France is", 2)[-1]
  assert "France" in completion or "Paris" in completion, completion
  body = code.split("def fibonacci(n):", 1)[1]
  assert "return" in body or "if n" in body, body
  assert "\n    " in body, body                       # An indented block.
