r"""Exports a trained policy into one small self-describing file.

  python -m kvp_jax.export --workdir=runs/ruler --output=runs/ruler/policy.kvp

Takes the EMA weights of the best checkpoint (by mean validation reward) by
default (--which=latest, --which=best_per_agent, --noema to change), plus the policy config and the
fingerprint of the decoder the traces came from.
"""

from absl import flags

from kvp_jax import _cli
from kvp_jax import policy as policy_lib
from kvp_jax import traces as traces_lib
from kvp_jax import training

_WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory.",
                               required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Artifact path (default: "
                              "<workdir>/policy.kvp).")
_WHICH = flags.DEFINE_enum("which", "best",
                           ["best", "latest", "best_per_agent"],
                           "Checkpoint to export: the best mean validation "
                           "step (default), the latest, or each agent's own "
                           "best step (runs with train.best_per_agent).")
_EMA = flags.DEFINE_bool("ema", True, "Export the EMA weights.")


def main(argv):
  del argv
  _cli.quiet_library_logs()
  try:
    path = training.export_policy(_WORKDIR.value, _OUTPUT.value,
                                  _WHICH.value, _EMA.value)
  except (FileNotFoundError, traces_lib.StoreError,
          policy_lib.ArtifactError) as e:
    _cli.fail(str(e))
  print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB)")


if __name__ == "__main__":
  _cli.run(main)
