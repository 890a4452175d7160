"""Export of a training run's policy into one self-describing artifact."""

import dataclasses
import json
from pathlib import Path

import ml_collections

from kvp_jax import cache as cache_lib
from kvp_jax import data as data_lib
from kvp_jax import policy as policy_lib
from kvp_jax import traces as traces_lib
from kvp_jax.training._checkpoints import restore_params
from kvp_jax.training._job import input_config
from kvp_jax.training._job import policy_config
from kvp_jax.training._job import store_path


def export_policy(workdir: str | Path, output: str | Path | None = None,
                  which: str = "best", ema: bool = True) -> Path:
  """Writes the artifact of a training run; returns its path. Its position
  embeddings keep only the rows inference reads (trim_position_rows).

  Args:
    which: "best" (default: the step of the best mean validation reward),
      "latest", or "best_per_agent" (each agent's own best step; its steps
      go into the artifact's info as "agent_steps").
  Raises:
    FileNotFoundError (no run or checkpoint), ArtifactError (params that do
    not fit the run's policy config).
  """
  workdir = Path(workdir)
  config_path = workdir / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"{workdir} is not a training run (no config.json)")
  config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
  store = traces_lib.TraceStore.open(store_path(config, workdir))
  params, step = restore_params(workdir, which=which, ema=ema)
  lay = store.layout
  layers = tuple(config.input.layers) if config.input.get("layers") else (
      0, lay.num_layers)
  summary_path = workdir / "summary.json"
  summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
  artifact = policy_lib.PolicyArtifact(
      agent_config=_trained_range(policy_config(config), config, store),
      params=params,
      model_name=store.metadata["model"]["name"],
      model_fingerprint=store.metadata["model"]["fingerprint"],
      num_layers=lay.num_layers, num_kv_heads=lay.num_kv_heads,
      head_dim=lay.head_dim, layer_start=layers[0], layer_stop=layers[1],
      info={"workdir": str(workdir), "checkpoint": which, "step": step,
            "ema": ema, "best_reward": summary.get("best_reward"),
            "traces": str(store.path)},
      protected=cache_lib.Protected.from_config(config.input))
  if which == "best_per_agent":
    artifact.info["agent_steps"] = summary.get("best_per_agent", {}).get(
        "step")
  return policy_lib.save_artifact(output or workdir / "policy.kvp",
                                  policy_lib.trim_position_rows(artifact))


def _trained_range(agent_config: policy_lib.AgentConfig, config, store
                   ) -> policy_lib.AgentConfig:
  """The agent config with the largest position and age training ranked:
  over the training split's split points P (the records' prompt lengths
  the input pipeline uses), positions num_sinks .. P - num_recent - 1 and
  ages num_recent .. P - 1 - num_sinks were ranked, so their maxima are
  max P - num_recent - 1 and max P - 1 - num_sinks."""
  cfg = dataclasses.replace(input_config(config, store.layout.num_layers),
                            shard_index=0, shard_count=1)
  elems, _ = data_lib.elements(store, "train", cfg)
  if not elems:
    return agent_config
  longest = max(e.prompt_length for e in elems)
  return agent_config.replace(
      trained_max_position=max(longest - cfg.num_recent - 1, 0),
      trained_max_age=max(longest - 1 - cfg.num_sinks, 0))
