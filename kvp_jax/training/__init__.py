"""Training the agents: mesh, state, the sharded step, validation, the loop."""

from kvp_jax.training._export import export_policy
from kvp_jax.training._features import recomputed_features
from kvp_jax.training._features import stored_features
from kvp_jax.training._history import plot_history
from kvp_jax.training._history import read_history
from kvp_jax.training._loop import policy_config
from kvp_jax.training._loop import store_path
from kvp_jax.training._loop import train_and_evaluate
from kvp_jax.training._loop import TrainingDiverged
from kvp_jax.training._mesh import agent_sharding
from kvp_jax.training._mesh import batch_sharding
from kvp_jax.training._mesh import DATA
from kvp_jax.training._mesh import HEADS
from kvp_jax.training._mesh import make_mesh
from kvp_jax.training._restore import restore_params
from kvp_jax.training._state import clip_per_agent
from kvp_jax.training._state import create_state
from kvp_jax.training._state import learning_rate_schedule
from kvp_jax.training._state import make_optimizer
from kvp_jax.training._state import TrainState
from kvp_jax.training._step import train_step
from kvp_jax.training._validation import BASELINES
from kvp_jax.training._validation import evaluate
