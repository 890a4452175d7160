"""The train step: agents -> Plackett-Luce RLOO loss -> AdamW + EMA, and its
jitted, sharded form (`make_train_step`, shared by the loop and
benchmarks/train_speed.py)."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from kvp_jax.training import _mesh

from kvp_jax import objective
from kvp_jax.policy import AgentConfig, apply_agents
from kvp_jax.training._state import TrainState, update_ema


def agent_inputs(batch: dict, keys: jax.Array,
                 windows: tuple[int, ...] | None = None
                 ) -> dict[str, jax.Array]:
  """Broadcasts the batch's per-trace arrays over the agents axis.

  Args:
    batch: a training batch ([B, ...] arrays).
    keys: [A, B, T, H].
    windows: per agent, the sliding window of its layer (0: global). A
      windowed layer's cache holds only the last `window` tokens when it is
      evicted (a ring), so only those are ranked, in training as at
      inference; older tokens would get no attention anyway.
  Returns:
    positions, valid [A, B, T] (the ranked set), held [A, B, T] (the slots
    the cache holds when it is evicted: the prompt's tokens, the protected
    ones included, within the window on a windowed layer; the key-contrast
    anchor's and KeyDiff's set, as at inference), context_length [A, B],
    importance [A, B, T].
  """
  a = keys.shape[0]
  bcast = lambda x: jnp.broadcast_to(x[None], (a,) + x.shape)
  positions = bcast(batch["positions"])
  context = bcast(batch["context_length"])
  valid = bcast(batch["valid"])
  held = positions >= 0
  if windows is not None and any(windows):
    w = jnp.asarray([x if x else jnp.iinfo(jnp.int32).max // 2
                     for x in windows], jnp.int32)[:, None, None]
    in_window = positions >= context[..., None] - w
    valid = valid & in_window
    held = held & in_window
  return {"positions": positions, "valid": valid, "held": held,
          "context_length": context,
          "importance": jnp.swapaxes(batch["importance"], 0, 1)}


def train_step(state: TrainState, batch: dict, key: jax.Array,
               feature_params=None, *, policy: AgentConfig,
               optimizer: optax.GradientTransformation, features: Callable,
               num_samples: int, ema_decay: float, ema_start: int,
               windows: tuple[int, ...] | None = None,
               weighting: objective.BudgetWeighting = objective.UNIFORM,
               advantage_norm: str = "per_trace"):
  """One optimisation step.

  Args:
    state: TrainState.
    batch: a training batch (kvp_jax.data): [B, ...] arrays.
    key: this step's PRNG key (fold_in(seed, step): resumable).
    feature_params: what `features` needs besides the batch (the frozen
      decoder's params for recomputed features; None for stored ones),
      passed as an argument, never baked into the program as constants.
    features: (batch, feature_params) -> (keys, values) [A, B, T, H].
    windows: per agent, its layer's sliding window (0: global).
    weighting: the budgets the reward sums over (default: all, the paper).
    advantage_norm: what K > 1 advantages are standardised over
      (objective.rloo_loss; default "per_trace", the shipped policy's).
  Returns:
    (new state, metrics): scalar metrics plus "per_agent_reward" [A] and
    "finite" (loss and params all finite).
  """
  keys, values = features(batch, feature_params)
  inputs = agent_inputs(batch, keys, windows)

  def loss_fn(params):
    scores = apply_agents(policy, params, keys, values, inputs["positions"],
                          inputs["valid"], inputs["context_length"],
                          inputs["held"])
    return objective.rloo_loss(key, scores, inputs["importance"],
                               inputs["valid"], num_samples,
                               weighting=weighting,
                               advantage_norm=advantage_norm)

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = update_ema(state.ema_params, params, state.step, ema_decay, ema_start)
  finite = jnp.isfinite(loss) & jnp.all(jnp.asarray(
      [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(params)]))
  out = {k: v for k, v in metrics.items() if not k.startswith("per_group")}
  out["per_agent_reward"] = metrics["per_group_reward"]
  out["grad_norm"] = optax.global_norm(grads)
  out["finite"] = finite
  return TrainState(step=state.step + 1, params=params, ema_params=ema,
                    opt_state=opt_state), out


def make_train_step(mesh: Mesh, state_sharding, *, policy: AgentConfig,
                    optimizer: optax.GradientTransformation,
                    features: Callable, num_samples: int, ema_decay: float,
                    ema_start: int, windows: tuple[int, ...] | None = None,
                    weighting: objective.BudgetWeighting = objective.UNIFORM,
                    advantage_norm: str = "per_trace") -> Callable:
  """`train_step` jitted over a (data, heads) mesh.

  The state is sharded as `state_sharding` (agents over heads) and donated;
  the batch keeps the sharding it was put with (`_mesh.put_batch`); the step
  key and the feature params are replicated, as are the metrics.

  Returns:
    step_fn(state, batch, key, feature_params) -> (state, metrics).
  """
  replicated = _mesh.replicated(mesh)
  return jax.jit(
      functools.partial(train_step, policy=policy, optimizer=optimizer,
                        features=features, num_samples=int(num_samples),
                        ema_decay=float(ema_decay), ema_start=int(ema_start),
                        windows=windows, weighting=weighting,
                        advantage_norm=advantage_norm),
      in_shardings=(state_sharding, None, replicated, replicated),
      out_shardings=(state_sharding, replicated), donate_argnums=(0,))
