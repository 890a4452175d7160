"""Training the agents, read top-down:

  train_and_evaluate (_loop)    the run: prepare, step, validate, checkpoint
  prepare (_job)                store, inputs, features, mesh, state, step
  TrainConfig (_config)         the typed `train` section
  check_store (_checks)         the store matches the config's model/settings
  run directory (_rundir)       config.json written only after the checks
  make_train_step (_step)       the jitted, sharded step (shared with
                                benchmarks/train_speed.py)
  Checkpoints (_checkpoints)    latest / best orbax checkpoints, the summary
  Validator (_report)           validation against the query-free baselines
  export_policy (_export)       the best checkpoint -> policy.kvp
"""

from kvp_jax.training._checkpoints import Checkpoints
from kvp_jax.training._checkpoints import describe_summary
from kvp_jax.training._checkpoints import read_summary
from kvp_jax.training._checkpoints import restore_params
from kvp_jax.training._checks import check_store
from kvp_jax.training._checks import expected_store_metadata
from kvp_jax.training._checks import model_identity
from kvp_jax.training._config import TrainConfig
from kvp_jax.training._export import export_policy
from kvp_jax.training._features import recomputed_features
from kvp_jax.training._features import stored_features
from kvp_jax.training._history import plot_history
from kvp_jax.training._history import read_history
from kvp_jax.training._job import policy_config
from kvp_jax.training._job import prepare
from kvp_jax.training._job import store_path
from kvp_jax.training._loop import train_and_evaluate
from kvp_jax.training._loop import TrainingDiverged
from kvp_jax.training._mesh import agent_sharding
from kvp_jax.training._mesh import batch_sharding
from kvp_jax.training._mesh import DATA
from kvp_jax.training._mesh import HEADS
from kvp_jax.training._mesh import make_mesh
from kvp_jax.training._mesh import put_batch
from kvp_jax.training._mesh import replicated
from kvp_jax.training._report import validation_table
from kvp_jax.training._rundir import ConfigMismatch
from kvp_jax.training._state import clip_per_agent
from kvp_jax.training._state import create_state
from kvp_jax.training._state import learning_rate_schedule
from kvp_jax.training._state import make_optimizer
from kvp_jax.training._state import TrainState
from kvp_jax.training._step import agent_inputs
from kvp_jax.training._step import make_train_step
from kvp_jax.training._step import train_step
from kvp_jax.training._validation import BASELINES
from kvp_jax.training._validation import evaluate
