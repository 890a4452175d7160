"""KV Policy agents: one small MLP per (layer, KV head), all vmapped."""

from kvp_jax.policy._agent import ABSOLUTE
from kvp_jax.policy._agent import Agent
from kvp_jax.policy._agent import AgentConfig
from kvp_jax.policy._agent import BOTH
from kvp_jax.policy._agent import POSITION_MODES
from kvp_jax.policy._agent import RELATIVE
from kvp_jax.policy._agent import key_contrast
from kvp_jax.policy._agent import token_age
from kvp_jax.policy._agents import agent_slice
from kvp_jax.policy._agents import Agents
from kvp_jax.policy._agents import apply_agents
from kvp_jax.policy._agents import init_agents
from kvp_jax.policy._agents import num_agents_of
from kvp_jax.policy._agents import num_params_per_agent
from kvp_jax.policy._artifact import ArtifactError
from kvp_jax.policy._artifact import load_artifact
from kvp_jax.policy._artifact import PolicyArtifact
from kvp_jax.policy._artifact import save_artifact
from kvp_jax.policy._artifact import trim_position_rows
from kvp_jax.policy._shipped import resolve_policy_path
from kvp_jax.policy._shipped import SHIPPED
from kvp_jax.policy._shipped import shipped_policies
from kvp_jax.policy._shipped import shipped_policy
from kvp_jax.policy._shipped import ShippedPolicy
