"""The exported policy: one small self-describing file.

It holds the agents' params (EMA weights by default), their AgentConfig, the
fingerprint and shape of the decoder they were trained on, and where they
came from. The inference side needs only this module to load it (flax
msgpack + numpy), not the training code; loading it for another decoder
fails with a clear error, and so do saving and loading params whose shapes
are not those of their AgentConfig.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from kvp_jax import _files
from kvp_jax.cache import Protected
from kvp_jax.policy._agent import AgentConfig
from kvp_jax.policy._agents import init_agents

FORMAT = "kvp_jax.policy/1"


class ArtifactError(ValueError):
  """An artifact that is unreadable or made for another decoder."""


@dataclasses.dataclass(frozen=True)
class PolicyArtifact:
  """A trained policy, ready to score a decoder's cache.

  Attributes:
    agent_config: the agents' architecture.
    params: numpy params with a leading [A] axis, A = (layer_stop -
      layer_start) x num_kv_heads, agent a = (layer - layer_start) * K + head.
    model_name, model_fingerprint: the decoder the agents were trained on.
    num_layers, num_kv_heads, head_dim: that decoder's shape.
    layer_start, layer_stop: the layers the agents cover.
    info: free-form provenance (workdir, step, validation summary).
    protected: the always-kept sinks and recent tokens the agents were
      trained around (they never ranked those); evaluation keeps the same.
  """
  agent_config: AgentConfig
  params: Any
  model_name: str
  model_fingerprint: str
  num_layers: int
  num_kv_heads: int
  head_dim: int
  layer_start: int
  layer_stop: int
  info: dict
  protected: Protected = Protected()

  def agent_index(self, layer: int) -> tuple[int, int]:
    """[start, stop) of the agents of a layer in `params`."""
    if not self.layer_start <= layer < self.layer_stop:
      raise ArtifactError(f"the policy has no agents for layer {layer} "
                          f"(covers {self.layer_start}..{self.layer_stop - 1})")
    a = (layer - self.layer_start) * self.num_kv_heads
    return a, a + self.num_kv_heads

  def check_model(self, fingerprint: str, num_layers: int, num_kv_heads: int,
                  head_dim: int) -> None:
    """Raises ArtifactError unless the artifact was made for this decoder."""
    if fingerprint != self.model_fingerprint:
      raise ArtifactError(
          f"this policy was trained on model {self.model_name!r} "
          f"(fingerprint {self.model_fingerprint}); the decoder in use has "
          f"fingerprint {fingerprint}")
    shape = (num_layers, num_kv_heads, head_dim)
    if shape != (self.num_layers, self.num_kv_heads, self.head_dim):
      raise ArtifactError(f"policy made for (layers, kv_heads, head_dim) = "
                          f"{(self.num_layers, self.num_kv_heads, self.head_dim)}"
                          f", decoder has {shape}")


  def check_params(self) -> None:
    """Raises ArtifactError unless `params` has the tree and the shapes that
    `agent_config` gives (layer_stop - layer_start) x num_kv_heads agents of
    head_dim; names every mismatched leaf."""
    a = (self.layer_stop - self.layer_start) * self.num_kv_heads
    want = _leaf_shapes(jax.eval_shape(
        lambda: init_agents(self.agent_config, a, self.head_dim,
                            jax.random.key(0))))
    have = _leaf_shapes(self.params)
    diffs = [f"{k} has shape {have.get(k)}, the config needs {want.get(k)}"
             for k in sorted(set(want) | set(have))
             if have.get(k) != want.get(k)]
    if diffs:
      raise ArtifactError(
          f"the policy's params do not match its agent config "
          f"({self.agent_config.to_dict()}, {a} agents, head_dim "
          f"{self.head_dim}): " + "; ".join(diffs))


def trim_position_rows(artifact: PolicyArtifact) -> PolicyArtifact:
  """The same policy with its position and age embeddings cut to the rows
  inference can read.

  With trained_max_position and trained_max_age recorded, positions and ages
  are clamped to them (kvp_jax.policy.Agent), so the rows past
  max(trained_max_position, trained_max_age) are never read: dropping them
  changes no score and shrinks the file (6000 rows of a 2k-trace training
  run are most of its bytes). An artifact without the trained range, or
  with nothing to drop, comes back as it is.
  """
  cfg = artifact.agent_config
  if cfg.trained_max_position is None or cfg.trained_max_age is None:
    return artifact
  rows = max(cfg.trained_max_position, cfg.trained_max_age) + 1
  if rows >= cfg.max_position:
    return artifact
  agents = dict(artifact.params["agents"])
  for name in ("position_embed", "age_embed"):
    if name in agents:
      agents[name] = {"embedding":
                      np.asarray(agents[name]["embedding"])[:, :rows]}
  return dataclasses.replace(
      artifact, agent_config=cfg.replace(max_position=rows),
      params={**artifact.params, "agents": agents})


def _leaf_shapes(params) -> dict[str, tuple[int, ...] | None]:
  """{"agents/mlp_0/kernel": shape} of a params tree (None: not an array)."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path):
          tuple(leaf.shape) if hasattr(leaf, "shape") else None
          for path, leaf in flat}


def save_artifact(path: str | os.PathLike[str],
                  artifact: PolicyArtifact) -> Path:
  """Writes the artifact atomically (temp file + rename).

  Raises:
    ArtifactError when its params do not fit its agent config (nothing is
    written).
  """
  path = Path(path)
  artifact.check_params()
  record = {
      "format": FORMAT,
      "agent_config": artifact.agent_config.to_dict(),
      "params": jax.tree_util.tree_map(np.asarray, artifact.params),
      "model": {"name": artifact.model_name,
                "fingerprint": artifact.model_fingerprint,
                "num_layers": artifact.num_layers,
                "num_kv_heads": artifact.num_kv_heads,
                "head_dim": artifact.head_dim},
      "layers": [artifact.layer_start, artifact.layer_stop],
      "info": artifact.info,
      "protected": artifact.protected.to_dict(),
  }
  _files.atomic_write(path, flax.serialization.msgpack_serialize(record))
  return path


def load_artifact(path: str | os.PathLike[str]) -> PolicyArtifact:
  """Reads an artifact; ArtifactError names the file if it is not one, or if
  its params do not fit its agent config."""
  path = Path(path)
  if not path.is_file():
    raise ArtifactError(f"policy artifact not found: {path}")
  try:
    record = flax.serialization.msgpack_restore(path.read_bytes())
  except Exception as e:  # msgpack raises assorted errors on bad bytes.
    raise ArtifactError(f"{path} is not a policy artifact: {e}") from e
  if not isinstance(record, dict) or record.get("format") != FORMAT:
    raise ArtifactError(f"{path} is not a {FORMAT} policy artifact")
  m = record["model"]
  artifact = PolicyArtifact(
      agent_config=AgentConfig.from_dict(record["agent_config"]),
      params=record["params"], model_name=m["name"],
      model_fingerprint=m["fingerprint"], num_layers=int(m["num_layers"]),
      num_kv_heads=int(m["num_kv_heads"]), head_dim=int(m["head_dim"]),
      layer_start=int(record["layers"][0]), layer_stop=int(record["layers"][1]),
      info=record.get("info", {}),
      protected=Protected(**record.get("protected", {})))
  try:
    artifact.check_params()
  except ArtifactError as e:
    raise ArtifactError(f"{path}: {e}") from e
  return artifact
