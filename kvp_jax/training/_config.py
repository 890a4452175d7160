"""The `train` section of an experiment config, typed and checked once."""

from __future__ import annotations

import dataclasses
from typing import Optional

from kvp_jax import configs
from kvp_jax import objective


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation and the loop's cadence (method section 4 defaults).

  Attributes:
    steps: optimisation steps of the whole run.
    learning_rate: AdamW peak learning rate, reached after `warmup_steps`
      linear steps from `warmup_init_fraction` x it; then cosine to
      `final_learning_rate` at `steps`.
    adam_eps, weight_decay: AdamW's.
    grad_clip: each agent's gradient is clipped to this global norm.
    ema_decay, ema_start: EMA of the weights from step `ema_start` on.
    num_samples: Plackett-Luce rankings sampled per trace (RLOO group).
    seed: initial params from key(seed), step keys from key(seed + 1).
    eval_every, checkpoint_every, log_every: in steps.
    max_eval_batches: validation batches read (None: the whole split).
    stop_after: stop (resumably) after this step; the schedule still runs to
      `steps`. Not part of what a resumed run must match.
    mesh_heads: devices along the mesh's heads axis.
    best_per_agent: also keep, per agent, the EMA params of its own best
      validation step (the paper's choice) in <workdir>/best_per_agent; the
      default (False) keeps one best step for all agents, the one whose mean
      cost is lowest, so the exported agents come from one checkpoint.
    reward_budgets: which budgets the training reward sums over
      (kvp_jax.objective.BudgetWeighting): "uniform" (every budget, the
      paper), "truncated" (budgets <= reward_max_budget) or "harmonic"
      (budget b weighted 1 / (b + 1)). Validation, best-step selection
      and evaluation always use the paper's all-budget cost, so runs with
      different rewards are compared on one scale.
    reward_max_budget: the largest budget "truncated" counts.
    advantage_norm: what the RLOO advantages of K = num_samples > 1
      rankings per trace are standardised over
      (kvp_jax.objective.ADVANTAGE_NORMS; the objective's docstring):
      "per_trace" (the default: each trace's K advantages among
      themselves, how the shipped K = 4 policy was trained, so the default
      reproduces it; a departure from the method spec), "batch" (the
      spec's "standardise over the batch": all K x B advantages of an
      agent's batch together; untested on dev, no evidence for or against
      it) or "none" (leave-one-out advantages, only clipped). With K = 1
      "per_trace" and "batch" are the same (the group is the batch).
  """
  steps: int = 4000
  learning_rate: float = 5e-5
  warmup_steps: int = 100
  warmup_init_fraction: float = 0.01
  final_learning_rate: float = 1e-6
  adam_eps: float = 1e-8
  weight_decay: float = 1e-3
  grad_clip: float = 5.0
  ema_decay: float = 0.99
  ema_start: int = 100
  num_samples: int = 1
  seed: int = 42
  eval_every: int = 200
  checkpoint_every: int = 200
  log_every: int = 10
  max_eval_batches: Optional[int] = None
  stop_after: Optional[int] = None
  mesh_heads: int = 1
  best_per_agent: bool = False
  reward_budgets: str = "uniform"
  reward_max_budget: int = 512
  advantage_norm: str = "per_trace"

  def __post_init__(self):
    for name in ("steps", "eval_every", "checkpoint_every", "log_every",
                 "num_samples", "mesh_heads"):
      if getattr(self, name) < 1:
        raise ValueError(f"config.train.{name}: must be >= 1, got "
                         f"{getattr(self, name)}")
    for name, low in (("max_eval_batches", 1), ("stop_after", 0)):
      value = getattr(self, name)
      if value is not None and value < low:
        raise ValueError(f"config.train.{name}: must be >= {low} or None, "
                         f"got {value}")
    if not 0 <= self.ema_decay < 1:
      raise ValueError(f"config.train.ema_decay: must be in [0, 1), got "
                       f"{self.ema_decay}")
    if self.reward_budgets not in objective.WEIGHTINGS:
      raise ValueError(f"config.train.reward_budgets: {self.reward_budgets!r}"
                       f" is not one of {', '.join(objective.WEIGHTINGS)}")
    if self.reward_max_budget < 1:
      raise ValueError("config.train.reward_max_budget: must be >= 1, got "
                       f"{self.reward_max_budget}")
    if self.advantage_norm not in objective.ADVANTAGE_NORMS:
      raise ValueError(f"config.train.advantage_norm: {self.advantage_norm!r}"
                       f" is not one of {', '.join(objective.ADVANTAGE_NORMS)}")

  @property
  def budget_weighting(self) -> objective.BudgetWeighting:
    """The reward's BudgetWeighting."""
    return objective.BudgetWeighting(self.reward_budgets,
                                     self.reward_max_budget)

  @property
  def last_step(self) -> int:
    """Where this invocation stops: `steps`, or `stop_after` if earlier."""
    return self.steps if self.stop_after is None else min(self.steps,
                                                          self.stop_after)

  @classmethod
  def from_config(cls, config) -> "TrainConfig":
    """The `train` section of a whole config; ValueError names a bad field."""
    return configs.from_config_dict(cls, config, section="train")
