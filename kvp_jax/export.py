r"""Exports a trained policy into one small self-describing file.

  python -m kvp_jax.export --workdir=runs/ruler --output=runs/ruler/policy.kvp

Takes the EMA weights of the best checkpoint (by validation reward) by
default (--which=latest, --noema to change), plus the policy config and the
fingerprint of the decoder the traces came from.
"""

import json
from pathlib import Path

from absl import app
from absl import flags
import ml_collections

from kvp_jax import _cli
from kvp_jax import policy as policy_lib
from kvp_jax import traces as traces_lib
from kvp_jax import training

_WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory.",
                               required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Artifact path (default: "
                              "<workdir>/policy.kvp).")
_WHICH = flags.DEFINE_enum("which", "best", ["best", "latest"],
                           "Checkpoint to export.")
_EMA = flags.DEFINE_bool("ema", True, "Export the EMA weights.")


def export(workdir: str | Path, output: str | Path | None = None,
           which: str = "best", ema: bool = True) -> Path:
  """Writes the artifact of a training run; returns its path."""
  workdir = Path(workdir)
  config_path = workdir / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"{workdir} is not a training run (no config.json)")
  config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
  store = traces_lib.TraceStore.open(training.store_path(config, workdir))
  params, step = training.restore_params(workdir, which=which, ema=ema)
  lay = store.layout
  layers = tuple(config.input.layers) if config.input.get("layers") else (
      0, lay.num_layers)
  summary_path = workdir / "summary.json"
  summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
  artifact = policy_lib.PolicyArtifact(
      agent_config=training.policy_config(config), params=params,
      model_name=store.metadata["model"]["name"],
      model_fingerprint=store.metadata["model"]["fingerprint"],
      num_layers=lay.num_layers, num_kv_heads=lay.num_kv_heads,
      head_dim=lay.head_dim, layer_start=layers[0], layer_stop=layers[1],
      info={"workdir": str(workdir), "checkpoint": which, "step": step,
            "ema": ema, "best_reward": summary.get("best_reward"),
            "traces": str(store.path)})
  return policy_lib.save_artifact(output or workdir / "policy.kvp", artifact)


def main(argv):
  del argv
  try:
    path = export(_WORKDIR.value, _OUTPUT.value, _WHICH.value, _EMA.value)
  except (FileNotFoundError, traces_lib.StoreError) as e:
    _cli.fail(str(e))
  print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB)")


if __name__ == "__main__":
  app.run(main)
