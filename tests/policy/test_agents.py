"""The vmapped agents: shapes, masking, independence, feature switches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kvp_jax import policy


def _key(seed):
  # rbg keys compile ~8x faster than threefry on CPU; the code under test
  # takes any key.
  return jax.random.key(seed, impl="rbg")

A, B, T, H = 3, 2, 6, 8
TINY = policy.AgentConfig(hidden=16, feature_width=8, position_dim=4,
                          max_position=32, dtype="float32")


def _inputs(seed=0, a=A):
  rng = np.random.default_rng(seed)
  keys = rng.normal(size=(a, B, T, H)).astype(np.float32)
  values = rng.normal(size=(a, B, T, H)).astype(np.float32)
  positions = np.broadcast_to(np.arange(T) + 3, (a, B, T)).astype(np.int32)
  valid = np.ones((a, B, T), bool)
  valid[:, 1, 4:] = False
  valid[-1, 0, 0] = False
  context_length = np.full((a, B), T + 3, np.int32)
  return dict(keys=jnp.asarray(keys), values=jnp.asarray(values),
              positions=jnp.asarray(positions), valid=jnp.asarray(valid),
              context_length=jnp.asarray(context_length))


def _scores(config, params, **inputs):
  return np.asarray(jax.jit(policy.apply_agents, static_argnums=0)(
      config, params, **inputs))


def _changes(config, params, base, **changed):
  """Whether the valid scores move when some inputs change."""
  s0 = _scores(config, params, **base)
  s1 = _scores(config, params, **{**base, **changed})
  valid = np.asarray(base["valid"])
  return not np.allclose(s0[valid], s1[valid], rtol=1e-6, atol=1e-6)


def _params(config, a=A, seed=0):
  """Random parameters of the right shapes without compiling an init (fast).

  Forward-pass tests use these; `init_agents` itself is tested separately.
  """
  shapes = jax.eval_shape(
      lambda key: policy.init_agents(config, a, H, key), _key(0))
  rng = np.random.default_rng(seed)

  def fill(path, x):
    noise = rng.normal(size=x.shape).astype(np.float32)
    if "scale" in jax.tree_util.keystr(path):
      return jnp.asarray(1.0 + 0.1 * noise)
    return jnp.asarray(0.5 * noise)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def tiny_params():
  return _params(TINY, seed=0)


def test_shapes_dtype_and_padding(tiny_params):
  inputs = _inputs()
  for config in (TINY, TINY.replace(dtype="bfloat16")):
    scores = _scores(config, tiny_params, **inputs)
    assert scores.shape == (A, B, T) and scores.dtype == np.float32
    valid = np.asarray(inputs["valid"])
    assert np.all(np.isneginf(scores[~valid]))
    assert np.all(np.isfinite(scores[valid]))


def test_bfloat16_agrees_with_float32(tiny_params):
  inputs = _inputs()
  valid = np.asarray(inputs["valid"])
  s32 = _scores(TINY, tiny_params, **inputs)[valid]
  s16 = _scores(TINY.replace(dtype="bfloat16"), tiny_params, **inputs)[valid]
  np.testing.assert_allclose(s16, s32, atol=0.05 * np.abs(s32).max() + 1e-3)


def test_agents_share_no_weights():
  inputs = _inputs()
  params = policy.init_agents(TINY, A, H, _key(0))
  # Float32 parameters with a leading agents axis, initialised per agent.
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    assert leaf.shape[0] == A and leaf.dtype == jnp.float32, path
    leaf = np.asarray(leaf)
    if leaf.std() > 0:  # Kernels and embeddings (norm scales start at 1).
      for a in range(1, A):
        assert not np.allclose(leaf[0], leaf[a]), path

  # The gradient of agent 0's scores touches only agent 0's parameters.
  def agent0_score(params):
    s = policy.apply_agents(TINY, params, **inputs)
    return jnp.sum(jnp.where(inputs["valid"][0], s[0], 0.0))

  grads = jax.jit(jax.grad(agent0_score))(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g = np.asarray(g)
    assert np.abs(g[0]).sum() > 0, path
    np.testing.assert_array_equal(g[1:], 0.0, err_msg=str(path))

  # Agent 0's scores depend only on agent 0's inputs.
  other = _inputs(seed=1)
  mixed = {k: v.at[1:].set(other[k][1:]) for k, v in inputs.items()}
  s0 = _scores(TINY, params, **inputs)
  s1 = _scores(TINY, params, **mixed)
  np.testing.assert_array_equal(s1[0], s0[0])


def test_agent_slice_scores_a_subset_of_heads(tiny_params):
  inputs = _inputs()
  full = _scores(TINY, tiny_params, **inputs)
  part = policy.agent_slice(tiny_params, 1, 3)
  assert policy.num_agents_of(part) == 2
  sliced = _scores(TINY, part, **{k: v[1:3] for k, v in inputs.items()})
  np.testing.assert_allclose(sliced, full[1:3], rtol=1e-6, atol=1e-6)


def test_tokens_are_scored_independently(tiny_params):
  inputs = _inputs()
  inputs["valid"] = jnp.ones((A, B, T), bool)
  perm = np.random.default_rng(0).permutation(T)
  permuted = {k: (v[:, :, perm] if v.ndim >= 3 else v)
              for k, v in inputs.items()}
  s = _scores(TINY, tiny_params, **inputs)
  sp = _scores(TINY, tiny_params, **permuted)
  np.testing.assert_allclose(sp, s[:, :, perm], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("switch,name", [("use_keys", "keys"),
                                         ("use_values", "values")])
def test_feature_switches(switch, name):
  config = TINY.replace(**{switch: False})
  params = _params(config, seed=1)
  base = _inputs()
  other = _inputs(seed=5)
  kept = "values" if name == "keys" else "keys"
  assert not _changes(config, params, base, **{name: other[name]})
  assert _changes(config, params, base, **{kept: other[kept]})
  assert _changes(config, params, base, positions=base["positions"] + 7)
  # The full agent does see the switched-off input.
  full = _params(TINY, seed=1)
  assert _changes(TINY, full, base, **{name: other[name]})


def test_position_switch_off():
  config = TINY.replace(use_position=False, position_mode="both")
  params = _params(config, seed=2)
  assert not any("embed" in str(p) for p, _ in
                 jax.tree_util.tree_leaves_with_path(params))
  base = _inputs()
  assert not _changes(config, params, base, positions=base["positions"] + 7,
                      context_length=base["context_length"] + 20)
  assert _changes(config, params, base, keys=_inputs(seed=5)["keys"])


def test_absolute_relative_and_both_positions():
  base = _inputs()
  shift = dict(positions=base["positions"] + 5,
               context_length=base["context_length"] + 5)
  longer = dict(context_length=base["context_length"] + 5)

  absolute = TINY.replace(position_mode="absolute")
  p_abs = _params(absolute, seed=3)
  assert not _changes(absolute, p_abs, base, **longer)
  assert _changes(absolute, p_abs, base, **shift)

  relative = TINY.replace(position_mode="relative")
  p_rel = _params(relative, seed=3)
  assert not _changes(relative, p_rel, base, **shift)   # Same ages.
  assert _changes(relative, p_rel, base, **longer)       # Older tokens.

  both = TINY.replace(position_mode="both")
  p_both = _params(both, seed=3)
  assert _changes(both, p_both, base, **shift)
  assert _changes(both, p_both, base, **longer)
  n_abs = policy.num_params_per_agent(p_abs)
  n_both = policy.num_params_per_agent(p_both)
  table = TINY.max_position * TINY.position_dim + 2 * TINY.position_dim
  assert n_both == n_abs + table + TINY.position_dim * TINY.hidden


def test_relative_age_is_context_length_minus_one_minus_position():
  ages = policy.token_age(jnp.array([[0, 5, 9]]), jnp.array([10]))
  np.testing.assert_array_equal(ages, [[9, 4, 0]])


@pytest.mark.parametrize("mode", ["absolute", "relative"])
def test_positions_are_clipped_to_the_table(mode):
  config = TINY.replace(position_mode=mode, use_keys=False, use_values=False)
  params = _params(config, a=1, seed=4)
  m = config.max_position
  inputs = _inputs(a=1)
  ctx = 3 * m
  pos = np.array([0, m - 1, m, 2 * m, ctx - m, ctx - 1], np.int32)
  inputs.update(positions=jnp.broadcast_to(pos, (1, B, T)),
                context_length=jnp.full((1, B), ctx, jnp.int32),
                valid=jnp.ones((1, B, T), bool))
  s = _scores(config, params, **inputs)[0, 0]
  if mode == "absolute":   # Positions m-1, m, 2m share the last row.
    np.testing.assert_array_equal(s[2], s[1])
    np.testing.assert_array_equal(s[3], s[1])
    assert s[0] != s[1]
  else:                    # Ages 3m-1, 2m-1, m-1 share the last row.
    np.testing.assert_array_equal(s[1], s[0])
    np.testing.assert_array_equal(s[4], s[0])
    assert s[5] != s[0]


def test_default_parameter_count():
  params = jax.eval_shape(lambda key: policy.init_agents(
      policy.AgentConfig(), 2, 256, key), _key(0))
  n = policy.num_params_per_agent(params)
  print(f"parameters per agent (head_dim 256, defaults): {n:,}")
  # k, v: Dense(256)+LN; position: Embed(6000, 32)+LN; MLP 544->256->256; ->1.
  expected = (2 * (256 * 256 + 256 + 512) + (6000 * 32 + 64)
              + (544 * 256 + 256 + 512) + (256 * 256 + 256 + 512) + 257)
  assert n == expected
  assert 450_000 < n < 600_000


def test_jit_matches_eager(tiny_params):
  inputs = _inputs()
  agents = policy.Agents(TINY, A)
  eager = agents.apply({"params": tiny_params}, **inputs)
  jitted = jax.jit(agents.apply)({"params": tiny_params}, **inputs)
  np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-5)


def test_config_round_trip_and_validation():
  config = TINY.replace(position_mode="both", use_values=False)
  assert policy.AgentConfig.from_dict(config.to_dict()) == config
  with pytest.raises(ValueError):
    policy.AgentConfig(position_mode="sideways")
  with pytest.raises(ValueError):
    policy.AgentConfig(use_keys=False, use_values=False, use_position=False)
  with pytest.raises(ValueError):
    policy.AgentConfig.from_dict({"hidden": 4, "bogus": 1})


def test_key_contrast_matches_numpy():
  rng = np.random.default_rng(3)
  keys = rng.normal(size=(B, T, H)).astype(np.float32)
  valid = np.ones((B, T), bool)
  valid[1, 4:] = False
  contrast, cosine = policy.key_contrast(jnp.asarray(keys), jnp.asarray(valid))
  for b in range(B):
    unit = keys[b] / np.linalg.norm(keys[b], axis=-1, keepdims=True)
    anchor = unit[valid[b]].mean(axis=0)
    for t in range(T):
      if not valid[b, t]:
        assert np.all(np.asarray(contrast)[b, t] == 0)
        continue
      np.testing.assert_allclose(contrast[b, t], unit[t] - anchor, atol=1e-6)
      want = unit[t] @ anchor / np.linalg.norm(anchor)
      np.testing.assert_allclose(cosine[b, t], want, atol=1e-6)


def test_key_contrast_sees_the_cache_not_the_padding(tiny_params):
  config = TINY.replace(use_key_contrast=True)
  params = _params(config, seed=4)
  assert "contrast_proj" in str(jax.tree_util.tree_structure(params))
  base = _inputs()
  # Scores stay a function of the set of cached tokens: permuting the slots
  # permutes the scores.
  perm = np.random.default_rng(1).permutation(T)
  permuted = {k: (v[:, :, perm] if v.ndim >= 3 else v) for k, v in base.items()}
  s = _scores(config, params, **base)
  np.testing.assert_allclose(_scores(config, params, **permuted),
                             s[:, :, perm], rtol=1e-5, atol=1e-5)
  # Garbage in empty slots changes nothing ...
  valid = np.asarray(base["valid"])
  noisy = np.where(valid[..., None], np.asarray(base["keys"]), 1e3)
  assert not _changes(config, params, base, keys=jnp.asarray(noisy))
  # ... but another token's key moves every score of its row (the anchor),
  # which a per-token agent never does.
  keys = np.asarray(base["keys"]).copy()
  keys[:, 0, 1] *= -3.0
  s1 = _scores(config, params, **{**base, "keys": jnp.asarray(keys)})
  assert not np.allclose(s1[:, 0, 2:][valid[:, 0, 2:]],
                         s[:, 0, 2:][valid[:, 0, 2:]], atol=1e-6)
  plain = _scores(TINY, tiny_params, **base)
  plain1 = _scores(TINY, tiny_params, **{**base, "keys": jnp.asarray(keys)})
  np.testing.assert_allclose(plain1[:, 0, 2:], plain[:, 0, 2:], rtol=1e-6)
