"""Long contexts, where eviction pays: the model's context limit at every
entry, a budget above the context, and the chunked prefill's memory bound
over prompts of thousands of tokens (the tiny model)."""

import jax
import numpy as np
import pytest

from kvp_jax import eviction as eviction_lib
from kvp_jax import inference
from kvp_jax import model as model_lib
from kvp_jax import scorers
from tests.eviction import conftest

LIMIT = 100               # The limit-testing model's max_context.


def _tiny(max_context: int, params: bool = True) -> model_lib.Pretrained:
  """The eviction tests' tiny model with a context of max_context tokens
  (params None: any forward pass would fail, so an error that names the
  limit came before anything ran)."""
  config = model_lib.tiny(sliding_window=16, vocab_size=64,
                          max_context=max_context)
  weights = model_lib.init_params(config, jax.random.key(0)) if params else None
  return model_lib.Pretrained(config, weights, None, "x", "random")


def _message(n: int, m: int = 0, what: str = "to generate") -> str:
  more = f" (+ {m} {what})" if m else ""
  return (f"prompt of {n} tokens{more} exceeds the model's context of "
          f"{LIMIT} tokens (tiny)")


def _rows(*lengths: int) -> list[list[int]]:
  rng = np.random.default_rng(5)
  return [list(rng.integers(3, 64, n)) for n in lengths]


def test_the_presets_know_their_context():
  assert model_lib.gemma3_270m().max_context == 32_768
  assert model_lib.tiny().max_context > 0
  # Not in the fingerprint: traces and policies recorded before it exist.
  assert (model_lib.gemma3_270m(max_context=8).architecture_fingerprint() ==
          model_lib.gemma3_270m().architecture_fingerprint())
  with pytest.raises(ValueError, match="max_context must be a positive int"):
    model_lib.tiny(max_context=0)


def test_check_context_names_the_row_that_exceeds_it_most():
  config = _tiny(LIMIT, params=False).config
  inference.check_context(config, [LIMIT, 3], 0)
  inference.check_context(config, [LIMIT - 8, 3], 8)
  with pytest.raises(ValueError) as e:
    inference.check_context(config, [LIMIT - 8, 95], [9, 20], "to score")
  assert str(e.value) == _message(95, 20, "to score")


@pytest.mark.parametrize("entry", [
    "prefill_prompts", "generate", "sequence_log_likelihood",
    "prefill_context", "prefill_compressed_once",
    "prefill_compressed_chunked", "generate_compressed",
    "continuation_log_likelihood", "continuation_logits"])
def test_every_entry_refuses_a_prompt_beyond_the_context(entry):
  """One line naming the limit, before any forward pass (params is None)."""
  model = _tiny(LIMIT, params=False)
  long_prompt, ok_prompt = _rows(LIMIT + 1, 40)
  knorm = scorers.get_scorer("knorm")
  once = eviction_lib.Eviction(24)
  chunked = eviction_lib.Eviction(24, protocol="chunked", chunk_size=16)
  calls = {
      "prefill_prompts": lambda p: inference.prefill_prompts(model, p),
      "generate": lambda p: inference.generate(model, p, 4),
      "sequence_log_likelihood": lambda p: inference.sequence_log_likelihood(
          model, p[-1], 0),
      "prefill_context": lambda p: eviction_lib.prefill_context(
          model, p, capture=False),
      "prefill_compressed_once": lambda p: eviction_lib.prefill_compressed(
          model, knorm, once, p, 0),
      "prefill_compressed_chunked": lambda p: eviction_lib.prefill_compressed(
          model, knorm, chunked, p, 0),
      "generate_compressed": lambda p: eviction_lib.generate_compressed(
          model, knorm, once, p, 4),
      "continuation_log_likelihood":
          lambda p: eviction_lib.continuation_log_likelihood(
              model, knorm, once, p, [[5]] * len(p)),
      "continuation_logits": lambda p: eviction_lib.continuation_logits(
          model, knorm, once, p, [[5]] * len(p)),
  }
  with pytest.raises(ValueError) as e:
    calls[entry]([ok_prompt, long_prompt])
  generated = entry in ("generate", "generate_compressed")
  scored = entry.startswith("continuation")
  m, what = (4, "to generate") if generated else (1, "to score") if scored \
      else (0, "")
  assert str(e.value) == _message(LIMIT + 1, m, what)


def test_prompt_plus_new_tokens_must_fit():
  """The tokens to generate (or score) count: a prompt that fits alone is
  refused when its continuation would cross the limit, and accepted at it."""
  model = _tiny(LIMIT, params=False)
  prompt = _rows(LIMIT - 4)
  with pytest.raises(ValueError) as e:
    inference.generate(model, prompt, 5, eos_id=-1)
  assert str(e.value) == _message(LIMIT - 4, 5)
  knorm = scorers.get_scorer("knorm")
  with pytest.raises(ValueError) as e:
    eviction_lib.generate_compressed(model, knorm, eviction_lib.Eviction(24),
                                     prompt, 5, eos_id=-1)
  assert str(e.value) == _message(LIMIT - 4, 5)
  with pytest.raises(ValueError) as e:
    eviction_lib.continuation_log_likelihood(
        model, knorm, eviction_lib.Eviction(24), prompt, [[5] * 5])
  assert str(e.value) == _message(LIMIT - 4, 5, "to score")
  # Exactly the context (positions 0 .. LIMIT - 1) is accepted: the check
  # passes and the forward pass is reached (params None fails there).
  with pytest.raises(Exception) as e:
    inference.generate(model, prompt, 4, eos_id=-1)
  assert "exceeds the model's context" not in str(e.value)


def _visible(cache: model_lib.KVCache, config, lengths) -> list:
  """Per layer, row and head, the positions attention can still read: all
  on a global layer, the last `window` on a windowed one (a chunked cache
  may also hold older tokens there, which no query reads)."""
  out = []
  for i, layer in enumerate(cache.layers):
    pos = np.asarray(layer.pos)
    window = config.layer_window(i)
    rows = []
    for b, n in enumerate(lengths):
      low = n - window if window else 0
      rows.append([sorted(p for p in pos[b, k].tolist() if p >= max(low, 0))
                   for k in range(pos.shape[1])])
    out.append(rows)
  return out


@pytest.fixture(scope="module")
def limited():
  """The tiny model with a context of LIMIT tokens."""
  return _tiny(LIMIT)


# One scorer per protocol: a prefill-attention rule, a key rule, and one
# that keeps attention moments running through the decode.
@pytest.mark.parametrize("protocol,name", [("once", "snapkv"),
                                           ("chunked", "knorm"),
                                           ("decode", "h2o")])
def test_a_budget_above_the_context_keeps_everything(limited, protocol, name):
  """A budget >= the tokens a head holds evicts nothing, even above the
  model's context: the tokens attention reads are the full cache's and the
  logits are its logits (the Eviction docstring)."""
  model = limited
  prompts = conftest.prompts()                     # 61 and 47 tokens.
  conts = [[5, 6, 7, 8, 9, 10, 11, 12], [7, 8, 9]]
  budget = 2 * LIMIT                               # Above the context.
  eviction = eviction_lib.Eviction(budget, protocol=protocol, chunk_size=16,
                                   decode_interval=4)
  full_eviction = eviction_lib.Eviction(None)
  scorer = scorers.get_scorer(name)
  want, _ = eviction_lib.continuation_logits(model, None, full_eviction,
                                             prompts, conts)
  got, _ = eviction_lib.continuation_logits(model, scorer, eviction, prompts,
                                            conts)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5,
                             rtol=1e-5)
  full = eviction_lib.prefill_compressed(model, None, full_eviction, prompts,
                                         8)
  kept = eviction_lib.prefill_compressed(model, scorer, eviction, prompts, 8)
  lengths = [len(p) for p in prompts]
  assert (_visible(kept.cache, model.config, lengths) ==
          _visible(full.cache, model.config, lengths))
  if protocol == "once":  # Sized by the budget: more bytes than the full.
    assert kept.cache.num_bytes() > full.cache.num_bytes()


@pytest.mark.parametrize("name", ["knorm", "snapkv"])
def test_chunked_prefill_memory_is_flat_over_thousands_of_tokens(name):
  """Protocol "chunked" at b = 32, c = 64: at no point does a head hold
  more than b + c slots, and the cache after the prefill (and at its
  peak) has the same bytes for 4k and 30k-token prompts."""
  model = _tiny(32_768)
  scorer = scorers.get_scorer(name)
  b, c = 32, 64
  eviction = eviction_lib.Eviction(b, protocol="chunked", chunk_size=c)
  results = {}
  for n in (4_096, 30_000):
    pre = eviction_lib.prefill_compressed(model, scorer, eviction,
                                          _rows(n, n - 37), 0)
    assert pre.peak_slots <= b + c, (n, pre.peak_slots)
    for layer in pre.cache.layers:
      held = np.asarray(layer.pos >= 0).sum(-1)       # [B, K] slots per head
      assert held.max() <= b, (n, held)
      assert np.asarray(layer.pos).max() == n - 1     # Read to the end.
    results[n] = (pre.cache.num_bytes(), pre.peak_bytes,
                  [layer.capacity for layer in pre.cache.layers])
  assert results[4_096] == results[30_000], results
