"""The device mesh: a data axis (traces) and a heads axis (agents)."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"
HEADS = "heads"


def make_mesh(num_agents: int, heads: int = 1,
              devices: list | None = None) -> Mesh:
  """A (data, heads) mesh over the devices.

  Args:
    num_agents: agents trained (their axis is split over `heads`).
    heads: devices along the heads axis; the rest form the data axis.
  Raises:
    ValueError: heads does not divide the devices or the agents.
  """
  devices = devices if devices is not None else jax.devices()
  n = len(devices)
  if heads < 1 or n % heads:
    raise ValueError(f"mesh heads={heads} does not divide {n} devices")
  if num_agents % heads:
    raise ValueError(f"mesh heads={heads} does not divide {num_agents} agents")
  grid = np.asarray(devices).reshape(n // heads, heads)
  return Mesh(grid, (DATA, HEADS))


def agent_sharding(mesh: Mesh, tree):
  """Shards every leaf's leading (agents) axis over `heads`; scalars and
  other leaves without an agents axis are replicated."""
  def spec(x):
    return NamedSharding(mesh, P(HEADS) if getattr(x, "ndim", 0) >= 1 else P())
  return jax.tree_util.tree_map(spec, tree)


def batch_sharding(mesh: Mesh, batch: dict) -> dict:
  """Shards a batch: [B, ...] over data; [B, A, ...] also over heads."""
  def spec(name, x):
    if name in ("keys", "values", "importance"):
      return NamedSharding(mesh, P(DATA, HEADS))
    return NamedSharding(mesh, P(DATA))
  return {k: spec(k, v) for k, v in batch.items()}


def replicated(mesh: Mesh) -> NamedSharding:
  """The same whole array on every device of the mesh."""
  return NamedSharding(mesh, P())


def put_batch(mesh: Mesh, batch: dict) -> dict:
  """A host batch on the mesh's devices, sharded as `batch_sharding`."""
  return jax.device_put(batch, batch_sharding(mesh, batch))
