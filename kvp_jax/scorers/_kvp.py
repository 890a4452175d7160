"""KVP: the learned policy (method section 3), from an exported artifact.

Each (layer, KV head) has its own agent, which scores a cached token from
its key, value and position alone (no queries, no attention), so the same
ranking serves every budget.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax.numpy as jnp

from kvp_jax.policy import AgentConfig, PolicyArtifact, agent_slice
from kvp_jax.policy import apply_agents, load_artifact
from kvp_jax.policy import resolve_policy_path
from kvp_jax.scorers._base import register, Scorer


@dataclasses.dataclass(frozen=True, eq=False)
class KVPScorer(Scorer):
  """Scores [batch, kv_heads, slots] from the layer's agents.

  Attributes:
    agent_config: the agents' architecture.
    params: agent params with a leading [A] axis (the only array field).
    layer_start: first layer with agents; agent (layer - layer_start) * K + h
      scores head h.
    layer_stop: one past the last layer with agents.
    fingerprint: the decoder the agents were trained on.
  """
  name = "kvp"
  learned = True
  array_fields = ("params",)
  agent_config: AgentConfig
  params: Any
  layer_start: int
  layer_stop: int
  fingerprint: str = ""

  def identity(self) -> dict:
    """Empty: a policy's results are told apart by its file's sha256 (the
    grid's identity), not by its fields."""
    return {}

  @classmethod
  def from_artifact(cls, artifact: PolicyArtifact | str | os.PathLike[str]
                    ) -> "KVPScorer":
    if not isinstance(artifact, PolicyArtifact):
      artifact = load_artifact(artifact)
    return cls(agent_config=artifact.agent_config,
               params=jax_tree_asarray(artifact.params),
               layer_start=artifact.layer_start,
               layer_stop=artifact.layer_stop,
               fingerprint=artifact.model_fingerprint)

  def _score(self, view, rng):
    k = view.num_kv_heads
    if not self.layer_start <= view.layer < self.layer_stop:
      raise ValueError(f"the KVP policy has no agents for layer {view.layer}")
    start = (view.layer - self.layer_start) * k
    params = agent_slice(self.params, start, start + k)
    swap = lambda x: jnp.swapaxes(x, 0, 1)                       # B <-> K
    positions = swap(view.positions)                              # [K, B, S]
    context = jnp.broadcast_to(view.context_length[None],
                               (k,) + view.context_length.shape)  # [K, B]
    scores = apply_agents(self.agent_config, params, swap(view.keys),
                          swap(view.values), positions, positions >= 0,
                          context)
    return swap(scores)


def load_policy(path: str | os.PathLike[str] | None, model
                ) -> tuple[KVPScorer, PolicyArtifact]:
  """A policy artifact checked against the decoder it will score (a
  `Pretrained`), and its scorer. `path` None (or "shipped") is the policy
  shipped for that decoder (kvp_jax.policy.shipped_policy). ArtifactError
  for another decoder, or when none ships for it."""
  artifact = load_artifact(resolve_policy_path(
      path, model.config.name, model.fingerprint))
  c = model.config
  artifact.check_model(model.fingerprint, c.num_layers, c.num_kv_heads,
                       c.head_dim)
  return KVPScorer.from_artifact(artifact), artifact


def jax_tree_asarray(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree_util.tree_map(jnp.asarray, tree)


@register
class _KVPFactory:
  """get_scorer("kvp", artifact=PATH) loads an exported policy."""
  name = "kvp"
  needs = frozenset()
  learned = True

  def __new__(cls, artifact=None, **kwargs):
    if artifact is None:
      raise ValueError("scorer 'kvp' needs artifact=<path of an exported "
                       "policy> (python -m kvp_jax.export)")
    return KVPScorer.from_artifact(artifact)
