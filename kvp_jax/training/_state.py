"""Train state, optimiser (AdamW, warm-up + cosine, per-agent clipping), EMA."""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """step: [] int32; params / ema_params: agent params with a leading [A]
  axis; opt_state: the optax state of `make_optimizer`."""
  step: jax.Array
  params: Any
  ema_params: Any
  opt_state: Any


def learning_rate_schedule(cfg) -> optax.Schedule:
  """Linear warm-up from `warmup_init_fraction` x lr, then cosine to
  `final_learning_rate` at `steps` (method section 4)."""
  return optax.warmup_cosine_decay_schedule(
      init_value=cfg.learning_rate * cfg.warmup_init_fraction,
      peak_value=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
      decay_steps=max(cfg.steps, cfg.warmup_steps + 1),
      end_value=cfg.final_learning_rate)


class _ClipState(NamedTuple):
  pass


def clip_per_agent(max_norm: float) -> optax.GradientTransformation:
  """Clips each agent's gradient to global norm `max_norm` separately.

  Agents share no weights and the paper trains each on its own, so one
  agent's large gradient must not shrink the others' (as a global norm over
  all agents would). Every leaf has a leading agents axis.
  """
  def init(params):
    del params
    return _ClipState()

  def update(updates, state, params=None):
    del params
    sq = sum(jnp.sum(jnp.square(g.astype(jnp.float32)),
                     axis=tuple(range(1, g.ndim)))
             for g in jax.tree_util.tree_leaves(updates))          # [A]
    scale = jnp.minimum(1.0, max_norm / jnp.maximum(jnp.sqrt(sq), 1e-12))
    updates = jax.tree_util.tree_map(
        lambda g: g * scale.reshape((-1,) + (1,) * (g.ndim - 1)).astype(
            g.dtype), updates)
    return updates, state

  return optax.GradientTransformation(init, update)


def make_optimizer(cfg) -> optax.GradientTransformation:
  return optax.chain(
      clip_per_agent(cfg.grad_clip),
      optax.adamw(learning_rate_schedule(cfg), b1=0.9, b2=0.999,
                  eps=cfg.adam_eps, weight_decay=cfg.weight_decay))


def create_state(params, optimizer) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    ema_params=jax.tree_util.tree_map(jnp.copy, params),
                    opt_state=optimizer.init(params))


def update_ema(ema, params, step, decay: float, start: int):
  """EMA of the weights from step `start` on (a copy of them before)."""
  use = step >= start
  return jax.tree_util.tree_map(
      lambda e, p: jnp.where(use, decay * e + (1 - decay) * p, p), ema, params)
