"""Decode-time eviction by attention moments (RoCo, H2O): the running
statistics against a one-shot recomputation, their alignment with the cache
through evictions, and the teacher-forced counterpart."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import cache as cache_lib
from kvp_jax import eviction as eviction_lib
from kvp_jax import inference
from kvp_jax import scorers
from tests.eviction import conftest
from kvp_jax.eviction import _moments

PROTECTED = cache_lib.Protected()


_prompts = conftest.prompts


def _by_position(moments, owner):
  """{(row, head, position): (count, sum, sq_sum)} of valid slots."""
  m, p = np.asarray(moments), np.asarray(owner)
  return {(b, k, int(p[b, k, s])): m[b, k, s]
          for b, k, s in zip(*np.nonzero(p >= 0))}


def _decode(tiny, scorer, eviction, prompts, steps):
  context = eviction_lib.prefill_context(tiny, prompts, capture=True)
  pre = eviction_lib.compress_context(tiny, context, scorer, eviction, steps)
  state = (scorer.for_budget(eviction.budget), jax.random.key(1),
           _moments.initial_moments(context.views(tiny.config, None),
                                    pre.cache))
  hook = _moments.EvictWithMoments(tiny.config, eviction.budget, PROTECTED)
  tokens, cache, (_, _, moments) = inference.decode_with_state(
      tiny.config, tiny.params, pre.cache, pre.first_logits,
      jnp.asarray(pre.lengths), max_new_tokens=steps, eos_id=-1, hook=hook,
      hook_state=state)
  return np.asarray(tokens), cache, moments


def test_running_moments_equal_a_one_shot_recomputation(tiny):
  """With a budget nothing is evicted at, the moments after decoding are
  those of every query (prompt and generated) over the final cache."""
  prompts, steps = _prompts(), 9
  eviction = eviction_lib.Eviction(128, protocol="decode", decode_interval=4,
                                   protected=PROTECTED)
  tokens, cache, moments = _decode(tiny, scorers.get_scorer("roco"), eviction,
                                   prompts, steps)
  whole = [p + tokens[i].tolist() for i, p in enumerate(prompts)]
  ref = eviction_lib.prefill_context(tiny, whole, capture=True).views(
      tiny.config, None)
  for i, (layer, (m, owner)) in enumerate(zip(cache.layers, moments)):
    np.testing.assert_array_equal(np.asarray(owner), np.asarray(layer.pos))
    want = _by_position(np.stack([np.asarray(getattr(ref[i], f)) for f in
                                  _moments.MOMENT_FIELDS], -1),
                        ref[i].positions)
    got = _by_position(m, owner)
    shared = set(want) & set(got)
    assert len(shared) >= len(got) // 2, i
    for key in shared:
      np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5,
                                 err_msg=f"layer {i} {key}")


@pytest.mark.parametrize("name", ["roco", "h2o"])
def test_evictions_keep_the_moments_aligned(tiny, name):
  """Evicted every few steps: the moments stay with their tokens. On a
  global layer a kept token was seen by every later query, so its count is
  the number of tokens read since it (prompt and generated)."""
  prompts, steps = _prompts(), 13
  eviction = eviction_lib.Eviction(24, protocol="decode", decode_interval=4,
                                   protected=PROTECTED)
  _, cache, moments = _decode(tiny, scorers.get_scorer(name), eviction,
                              prompts, steps)
  budgets = cache_lib.window_capped_budgets(tiny.config, 24, PROTECTED)
  for i, (layer, (m, owner)) in enumerate(zip(cache.layers, moments)):
    np.testing.assert_array_equal(np.asarray(owner), np.asarray(layer.pos))
    if tiny.config.layer_window(i) is not None:
      continue
    held = np.asarray(layer.pos >= 0).sum(-1)
    assert held.max() <= budgets[i] + eviction.decode_interval
    for (b, _, p), (count, total, _) in _by_position(m, owner).items():
      seen = len(prompts[b]) + steps - p
      assert count == seen, (i, b, p)
      assert 0.0 < total <= seen + 1e-5


def test_generation_matches_the_hook_step_by_step(tiny):
  """generate_compressed with RoCo under "decode": the loop wiring is the
  hook applied after each step."""
  prompts, steps = _prompts(), 11
  eviction = eviction_lib.Eviction(24, protocol="decode", decode_interval=4,
                                   protected=PROTECTED)
  scorer = scorers.get_scorer("roco")
  out, _ = eviction_lib.generate_compressed(tiny, scorer, eviction, prompts,
                                            steps, eos_id=-1)
  context = eviction_lib.prefill_context(tiny, prompts, capture=True)
  pre = eviction_lib.compress_context(tiny, context, scorer, eviction, steps)
  state = (scorer.for_decoding().for_budget(24),
           jax.random.fold_in(jax.random.key(0), 1),
           _moments.initial_moments(context.views(tiny.config, None),
                                    pre.cache))
  hook = jax.jit(_moments.EvictWithMoments(tiny.config, 24, PROTECTED))
  kv, pos = pre.cache, jnp.asarray(pre.lengths)
  token = jnp.argmax(pre.first_logits, axis=-1).astype(jnp.int32)
  want = []
  for _ in range(steps):
    want.append(np.asarray(token))
    logits, kv, captured = inference.extend(
        tiny.config, tiny.params, kv, token[:, None], pos[:, None],
        capture=True)
    kv, state = hook(kv, state, captured, pos[:, None])
    token, pos = jnp.argmax(logits, axis=-1).astype(jnp.int32), pos + 1
  np.testing.assert_array_equal(np.asarray(out), np.stack(want, axis=1))


def test_decoding_keeps_easykvs_wider_recent_window(tiny):
  """RoCo evicts with recent_ratio in prefill and decode_recent_ratio while
  decoding (EasyKV: 0.1 and 0.3). With a budget the prompts fit in, only
  decode-time evictions happen (here between the pieces of a teacher-forced
  continuation): the prefill ratio changes nothing, the decoding one does
  (at b = 64: 19 recent tokens kept, not 16)."""
  prompts = _prompts()
  conts = [list(np.random.default_rng(3).integers(3, 64, 40))] * 2
  eviction = eviction_lib.Eviction(64, protocol="decode", decode_interval=4,
                                   protected=PROTECTED)
  def run(**ratios):
    logits, _ = eviction_lib.continuation_logits(
        tiny, scorers.get_scorer("roco", **ratios), eviction, prompts, conts)
    return np.asarray(logits)[:, :40]
  default = run()
  np.testing.assert_array_equal(
      default, run(recent_ratio=0.3, decode_recent_ratio=0.3))
  assert not np.allclose(default, run(decode_recent_ratio=0.0))


def test_teacher_forced_decode_protocol(tiny):
  """Continuation logits with RoCo evicting between pieces: the full
  cache's at a budget nothing is evicted at; finite at a small one."""
  prompts = _prompts()
  conts = [list(np.random.default_rng(2).integers(3, 64, 20))] * 2
  scorer = scorers.get_scorer("roco")
  full, _ = eviction_lib.continuation_logits(
      tiny, scorer, eviction_lib.Eviction(None, protected=PROTECTED),
      prompts, conts)
  big, _ = eviction_lib.continuation_logits(
      tiny, scorer, eviction_lib.Eviction(128, protocol="decode",
                                          decode_interval=4,
                                          protected=PROTECTED),
      prompts, conts)
  np.testing.assert_allclose(np.asarray(big)[:, :20], np.asarray(full)[:, :20],
                             atol=2e-5, rtol=1e-5)
  small, _ = eviction_lib.continuation_logits(
      tiny, scorer, eviction_lib.Eviction(24, protocol="decode",
                                          decode_interval=4,
                                          protected=PROTECTED),
      prompts, conts)
  assert np.isfinite(np.asarray(small)).all()
  assert not np.allclose(np.asarray(small)[:, :20], np.asarray(full)[:, :20])
  ll, _ = eviction_lib.continuation_log_likelihood(
      tiny, scorer, eviction_lib.Eviction(24, protocol="decode",
                                          decode_interval=4,
                                          protected=PROTECTED),
      prompts, conts)
  assert all(np.isfinite(x).all() and len(x) == 20 for x in ll)


def test_query_readers_still_refuse_decode_time_eviction(tiny):
  eviction = eviction_lib.Eviction(24, protocol="decode", decode_interval=4,
                                   protected=PROTECTED)
  for name in ("snapkv", "tova"):
    with pytest.raises(ValueError, match="cannot evict during decoding"):
      eviction_lib.generate_compressed(tiny, scorers.get_scorer(name),
                                       eviction, _prompts(), 4)
