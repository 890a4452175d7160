"""All of a model's agents as one vmapped module.

Agent a = layer * num_kv_heads + kv_head (the order of
`DecoderConfig.num_agents`; the caller decides and keeps it). Every parameter
leaf has a leading agents axis [A, ...]: agents share no weights, and a
trainer can shard that axis over devices ("heads") or slice it at inference
(`agent_slice`) to score one layer's heads.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kvp_jax.policy._agent import Agent
from kvp_jax.policy._agent import AgentConfig

Params = Any  # A pytree of arrays, each with a leading [A] axis.


class Agents(nn.Module):
  """`num_agents` independent agents, vmapped over a leading axis A.

  Call: (keys [A, B, T, H], values [A, B, T, H], positions [A, B, T] int32,
  valid [A, B, T] bool, context_length [A, B] int32, held [A, B, T] bool
  or None: the key-contrast anchor's set, default valid) -> scores
  [A, B, T] float32, -inf where not valid. Agent a sees only slice a of
  every input.
  """
  config: AgentConfig
  num_agents: int

  @nn.compact
  def __call__(self, keys: jax.Array, values: jax.Array,
               positions: jax.Array, valid: jax.Array,
               context_length: jax.Array,
               held: jax.Array | None = None) -> jax.Array:
    held = valid if held is None else held
    vmapped = nn.vmap(
        Agent,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=0,
        out_axes=0,
        axis_size=self.num_agents,
    )
    return vmapped(self.config, name="agents")(
        keys, values, positions, valid, context_length, held)


def init_agents(config: AgentConfig, num_agents: int, head_dim: int,
                key: jax.Array) -> Params:
  """Fresh parameters of `num_agents` agents for keys/values of `head_dim`.

  Returns:
    The `params` collection; every leaf is float32 with a leading [A] axis,
    and each agent gets its own random initialisation.
  """
  a = num_agents
  kv = jnp.zeros((a, 1, 1, head_dim), jnp.float32)
  positions = jnp.zeros((a, 1, 1), jnp.int32)
  valid = jnp.ones((a, 1, 1), bool)
  context_length = jnp.ones((a, 1), jnp.int32)
  init = jax.jit(Agents(config, num_agents).init)
  return init(key, kv, kv, positions, valid, context_length)["params"]


def num_agents_of(params: Params) -> int:
  """A, the size of the leading axis shared by every leaf."""
  sizes = {x.shape[0] for x in jax.tree.leaves(params)}
  if len(sizes) != 1:
    raise ValueError(f"params leaves disagree on the agents axis: {sizes}")
  return sizes.pop()


def apply_agents(config: AgentConfig, params: Params, keys: jax.Array,
                 values: jax.Array, positions: jax.Array, valid: jax.Array,
                 context_length: jax.Array,
                 held: jax.Array | None = None) -> jax.Array:
  """Scores [A, B, T] float32 (-inf where not valid); A read from params.

  Args as `Agents.__call__`: keys/values [A, B, T, H], positions [A, B, T]
  int32, valid [A, B, T] bool, context_length [A, B] int32, held
  [A, B, T] bool (the key-contrast anchor's set; None: valid).
  """
  return Agents(config, num_agents_of(params)).apply(
      {"params": params}, keys, values, positions, valid, context_length,
      held)


def num_params_per_agent(params: Params) -> int:
  """Number of parameters of one agent (total / A)."""
  a = num_agents_of(params)
  total = sum(x.size for x in jax.tree.leaves(params))
  return total // a


def agent_slice(params: Params, start: int, stop: int) -> Params:
  """Parameters of agents start..stop-1 (leading axis stop - start)."""
  return jax.tree.map(lambda x: x[start:stop], params)
