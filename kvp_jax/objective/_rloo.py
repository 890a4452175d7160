"""REINFORCE with a leave-one-out baseline (RLOO) on Plackett-Luce rankings.

Method section 4 (arXiv 2602.10238). For a group of sampled rankings sigma_k
with rewards r_k:

    r_k <- max(r_k, min_reward)                        (-200)
    A_k  = r_k - mean_{j != k} r_j                      (leave-one-out baseline)
    A    = (A - mean A) / (std A + eps)  over the group, then clip to [-2, 2]
    loss = - sum_k stop_gradient(A_k) * log pi(sigma_k) / sum_k P_k

P_k = number of valid (ranked) items of sample k, so the loss is a mean over
ranking steps. Two ways to form the groups:

- num_samples=1 (the released trainer): one Gumbel sample per trace, the
  group is the batch of B traces (rewards are oracle-normalised, so different
  traces are comparable).
- num_samples=K>1 (the paper's Algorithm 1): K samples per trace, one group
  per trace.

What "over the group" standardises with K > 1 is `advantage_norm`
(ADVANTAGE_NORMS; with K = 1 "per_trace" and "batch" are one thing, the
batch):

- "per_trace" (the default): each trace's K leave-one-out advantages are
  standardised among themselves. A departure from the method spec
  (docs/kvp_method.md, section 4: "standardise A over the batch"): every
  trace then weighs the same in the gradient whatever the spread of its
  rewards. The default because the shipped policy
  (kvp_jax/policy/shipped, experiments/ruler_agents_k4.py, K = 4) was
  trained with it and is what the dev evidence is about (validation mean
  normalised cost 1.225 against K = 1's 1.580, and the held-out verdicts
  in its index.json); keeping it keeps the shipped policy reproducible.
- "batch" (the spec's formula): the baseline is still each trace's other
  K - 1 rankings, but the K x B advantages of the batch (per leading
  group, e.g. per agent) are standardised together, so a trace whose
  rankings differ more in reward pushes harder. Implemented and tested
  against a numpy transcription of the spec; NOT trained or evaluated on
  dev: no evidence says it is better or worse.
- "none": the leave-one-out advantages as they are (only clipped to
  [-clip, clip]); their scale is the reward's.

Leading axes before [B, P] (e.g. agents A) are independent problems: the
returned loss is the SUM of their losses, so with agents that share no
weights each agent's parameters receive exactly the gradient of its own loss
(clip gradients per agent to reproduce the paper's per-agent training).

A trace is left out of every group (advantage 0, not in any baseline or
standardisation) when all its rankings have the same reward: fewer than two
valid items, or all importance ~0. It still counts in sum_k P_k. Float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kvp_jax.objective._plackett_luce import deterministic_order
from kvp_jax.objective._plackett_luce import gumbel_sort
from kvp_jax.objective._plackett_luce import log_prob
from kvp_jax.objective._reward import _TINY
from kvp_jax.objective._reward import _safe_ratio
from kvp_jax.objective._reward import BudgetWeighting
from kvp_jax.objective._reward import expected_random_cost
from kvp_jax.objective._reward import oracle_cost
from kvp_jax.objective._reward import ranking_cost
from kvp_jax.objective._reward import UNIFORM

MIN_REWARD = -200.0
ADVANTAGE_CLIP = 2.0
STD_EPS = 1e-6
# What the K > 1 advantages are standardised over (module docstring);
# "per_trace" (the first) is the default and the shipped policy's.
ADVANTAGE_NORMS = ("per_trace", "batch", "none")


def rloo_advantages(rewards: jax.Array, member: jax.Array | None = None, *,
                    min_reward: float = MIN_REWARD,
                    clip: float = ADVANTAGE_CLIP,
                    eps: float = STD_EPS,
                    standardise_axes: int | tuple[int, ...] | None = -1
                    ) -> jax.Array:
  """Leave-one-out advantages over the last axis, standardised and clipped.

  Args:
    rewards: [..., N] float; the last axis is the group (the baseline of an
      entry is the mean of its group's other members).
    member: [..., N] bool, which entries belong to the group (default all).
      Non-members get advantage 0 and enter no baseline or statistic.
    min_reward: rewards are clamped from below to this value first.
    clip: standardised advantages are clipped to [-clip, clip].
    eps: added to the standard deviation (population std).
    standardise_axes: the axes whose advantages are standardised together:
      -1 (default) within each group; e.g. (-2, -1) over a [..., B, K]
      block of B groups (rloo_loss's "batch"); None: not standardised (only
      clipped). Only entries of groups with two members or more count.
  Returns:
    [..., N] float32 advantages; 0 for non-members and for groups with fewer
    than two members.
  """
  r = jnp.maximum(rewards.astype(jnp.float32), min_reward)
  if member is None:
    member = jnp.ones(r.shape, bool)
  member = jnp.broadcast_to(member.astype(bool), r.shape)
  m = member.astype(jnp.float32)
  n = jnp.sum(m, axis=-1, keepdims=True)                     # [..., 1]
  total = jnp.sum(m * r, axis=-1, keepdims=True)              # [..., 1]
  baseline = (total - r) / jnp.maximum(n - 1.0, 1.0)          # [..., N]
  ok = member & (n >= 2.0)
  adv = jnp.where(ok, r - baseline, 0.0)
  if standardise_axes is None:
    return jnp.where(ok, jnp.clip(adv, -clip, clip), 0.0)
  if standardise_axes in (-1, (-1,)):
    # Within each group: the statistics of its members (as ever; the
    # numbers of the shipped policy's training).
    w, count = m, n
  else:
    # Pooled over several groups: the entries of groups that have a
    # leave-one-out advantage.
    w = ok.astype(jnp.float32)
    count = jnp.sum(w, axis=standardise_axes, keepdims=True)
  n_safe = jnp.maximum(count, 1.0)
  mean = jnp.sum(w * adv, axis=standardise_axes, keepdims=True) / n_safe
  var = jnp.sum(w * jnp.square(adv - mean), axis=standardise_axes,
                keepdims=True) / n_safe
  adv = (adv - mean) / (jnp.sqrt(var) + eps)
  return jnp.where(ok, jnp.clip(adv, -clip, clip), 0.0)


def _masked_mean(x: jax.Array, w: jax.Array, axes) -> jax.Array:
  w = jnp.broadcast_to(w, x.shape).astype(jnp.float32)
  return jnp.sum(x * w, axis=axes) / jnp.maximum(jnp.sum(w, axis=axes), 1.0)


def rloo_loss(key: jax.Array, scores: jax.Array, importance: jax.Array,
              valid: jax.Array, num_samples: int, *,
              min_reward: float = MIN_REWARD,
              clip: float = ADVANTAGE_CLIP,
              eps: float = STD_EPS,
              weighting: BudgetWeighting = UNIFORM,
              advantage_norm: str = "per_trace"
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The RLOO policy-gradient loss of a batch of traces.

  Rankings are drawn with `gumbel_sort(key, scores, valid, num_samples)`
  (scores under stop_gradient), so a caller can reproduce them from `key`.

  Args:
    key: PRNG key.
    scores: [..., B, P] float, the agents' scores (gradients flow here only
      through log pi); invalid entries may be -inf.
    importance: [..., B, P] float >= 0, future importance targets.
    valid: [..., B, P] bool, the items to rank (the prompt tokens).
    num_samples: K. 1: the group is the batch axis B; K > 1: K samples per
      trace, one group per trace.
    min_reward / clip / eps: see `rloo_advantages`.
    weighting: the budgets the reward (and every cost metric) sums over
      (kvp_jax.objective.BudgetWeighting; default: all, the paper).
    advantage_norm: what the advantages are standardised over (module
      docstring): "per_trace" (default, the shipped policy's: with K > 1
      each trace's K advantages among themselves), "batch" (the method
      spec's: all K x B advantages of the batch, per leading group;
      untested on dev) or "none". With K = 1 "per_trace" and "batch" both
      standardise over the batch.
  Returns:
    loss: scalar float32, the sum over the leading axes of
      -sum_{b,k} A_{b,k} log pi(sigma_{b,k}) / sum_{b,k} P_b.
    metrics: float32 scalars averaged over leading axes and over the traces
      with at least one valid item: "loss" (mean per leading group),
      "reward", "normalised_cost" (sampled rankings, unclamped),
      "deterministic_normalised_cost" (argsort of the scores),
      "random_normalised_cost" (expected, uniform rankings),
      "log_prob_per_item", "advantage_abs", "advantage_clip_fraction";
      and [...]-shaped "per_group_loss", "per_group_reward",
      "per_group_deterministic_normalised_cost" (e.g. per agent).
  """
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples}")
  if advantage_norm not in ADVANTAGE_NORMS:
    raise ValueError(f"advantage_norm must be one of {ADVANTAGE_NORMS}, got "
                     f"{advantage_norm!r}")
  k = num_samples
  scores = scores.astype(jnp.float32)
  importance = importance.astype(jnp.float32)
  valid = valid.astype(bool)
  batch_shape = scores.shape[:-1]                             # [..., B]
  sample_shape = batch_shape + (k, scores.shape[-1])          # [..., B, K, P]

  orders = gumbel_sort(key, jax.lax.stop_gradient(scores), valid,
                       num_samples=k)                         # [..., B, K, P]
  scores_k = jnp.broadcast_to(scores[..., None, :], sample_shape)
  valid_k = jnp.broadcast_to(valid[..., None, :], sample_shape)
  importance_k = jnp.broadcast_to(importance[..., None, :], sample_shape)

  n_items = jnp.sum(valid.astype(jnp.float32), axis=-1)       # [..., B]
  oracle = oracle_cost(importance, valid, weighting)          # [..., B]
  cost = ranking_cost(orders, importance_k, valid_k, weighting)  # [..., B, K]
  norm_cost = _safe_ratio(cost, oracle[..., None])            # [..., B, K]
  rewards = -norm_cost                                        # [..., B, K]

  informative = (n_items >= 2.0) & (oracle > _TINY)           # [..., B]
  adv_kwargs = dict(min_reward=min_reward, clip=clip, eps=eps)
  if advantage_norm == "none":
    adv_kwargs["standardise_axes"] = None
  if k == 1:  # Group across the traces of the batch.
    adv = rloo_advantages(rewards[..., 0], informative, **adv_kwargs)[..., None]
  else:       # Group across the samples of each trace.
    if advantage_norm == "batch":  # Standardised over the B x K block.
      adv_kwargs["standardise_axes"] = (-2, -1)
    adv = rloo_advantages(rewards, informative[..., None], **adv_kwargs)
  adv = jax.lax.stop_gradient(adv)                            # [..., B, K]

  logp = log_prob(scores_k, orders, valid_k)                  # [..., B, K]
  steps = k * jnp.sum(n_items, axis=-1)                       # [...]
  group_loss = -jnp.sum(adv * logp, axis=(-2, -1)) / jnp.maximum(steps, 1.0)
  loss = jnp.sum(group_loss)

  # Metrics, without gradients.
  has_items = (n_items >= 1.0)                                # [..., B]
  sg = jax.lax.stop_gradient
  det_cost = _safe_ratio(
      ranking_cost(deterministic_order(sg(scores), valid), importance, valid,
                   weighting), oracle)                        # [..., B]
  rand_cost = _safe_ratio(expected_random_cost(importance, valid, weighting),
                          oracle)
  w_k = has_items[..., None]
  per_group_reward = _masked_mean(rewards, w_k, (-2, -1))
  per_group_det = _masked_mean(det_cost, has_items, -1)
  members = jnp.broadcast_to(informative[..., None], adv.shape)
  metrics = {
      "loss": jnp.mean(group_loss),
      "reward": jnp.mean(per_group_reward),
      "normalised_cost": jnp.mean(_masked_mean(norm_cost, w_k, (-2, -1))),
      "deterministic_normalised_cost": jnp.mean(per_group_det),
      "random_normalised_cost": jnp.mean(
          _masked_mean(rand_cost, has_items, -1)),
      "log_prob_per_item": jnp.sum(sg(logp)) / jnp.maximum(
          k * jnp.sum(n_items), 1.0),
      "advantage_abs": _masked_mean(jnp.abs(adv), members, None),
      "advantage_clip_fraction": _masked_mean(
          (jnp.abs(adv) >= clip).astype(jnp.float32), members, None),
      "per_group_loss": sg(group_loss),
      "per_group_reward": per_group_reward,
      "per_group_deterministic_normalised_cost": per_group_det,
  }
  return loss, metrics
