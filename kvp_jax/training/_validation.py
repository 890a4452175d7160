"""Validation: each agent's mean normalised cost beside the query-free
baselines' on the same traces (1.0 = the oracle; lower is better).

The policy ranks deterministically (argsort of its scores, no noise). Random
is the exact expectation of a uniform ranking. StreamingLLM, K-norm and
KeyDiff are the rules of kvp_jax.scorers applied to the stored keys, with
the agents axis in the place of KV heads, over the slots the cache would
hold at eviction (agent_inputs' `held`: on a sliding-window layer the
ring's last `window` tokens), so KeyDiff's anchor is the mean unit key of
the same set as at inference (and as the policy's key-contrast anchor);
only the ranked set is ranked. A trace whose importance is all
zero for an agent (every order is optimal) is left out of that agent's mean.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from kvp_jax import objective
from kvp_jax import scorers as scorers_lib
from kvp_jax.policy import AgentConfig, apply_agents
from kvp_jax.training._step import agent_inputs

BASELINES = ("random", "streaming_llm", "knorm", "keydiff")


def _costs(order, inputs):
  return objective.normalised_cost(order, inputs["importance"],
                                   inputs["valid"])                # [A, B]


@functools.partial(jax.jit, static_argnames=("policy", "features",
                                             "with_baselines", "windows"))
def _batch_sums(params, batch, feature_params, *, policy: AgentConfig,
                features: Callable, with_baselines: bool, windows):
  keys, values = features(batch, feature_params)                   # [A, B, T, H]
  inputs = agent_inputs(batch, keys, windows)
  informative = (objective.oracle_cost(inputs["importance"], inputs["valid"])
                 > 1e-30) & (batch["weight"][None] > 0)            # [A, B]
  costs = {}
  scores = apply_agents(policy, params, keys, values, inputs["positions"],
                        inputs["valid"], inputs["context_length"],
                        inputs["held"])
  costs["policy"] = _costs(objective.deterministic_order(scores,
                                                         inputs["valid"]),
                           inputs)
  if with_baselines:
    costs["random"] = objective.random_normalised_cost(inputs["importance"],
                                                       inputs["valid"])
    view = scorers_lib.LayerView(
        keys=jnp.swapaxes(keys, 0, 1), values=jnp.swapaxes(values, 0, 1),
        positions=jnp.swapaxes(
            jnp.where(inputs["held"], inputs["positions"], -1), 0, 1),
        context_length=batch["context_length"])
    for name in BASELINES[1:]:
      s = jnp.swapaxes(scorers_lib.get_scorer(name).score(view), 0, 1)
      costs[name] = _costs(objective.deterministic_order(s, inputs["valid"]),
                           inputs)
  w = informative.astype(jnp.float32)
  sums = {k: jnp.sum(v * w, axis=1) for k, v in costs.items()}     # [A]
  return sums, jnp.sum(w, axis=1)


def evaluate(params, batches: Iterable[dict], *, policy: AgentConfig,
             features: Callable, feature_params=None,
             put: Callable = lambda b: b, with_baselines: bool = True,
             windows: tuple[int, ...] | None = None) -> dict[str, np.ndarray]:
  """Per-agent mean normalised cost of the policy (and baselines).

  Returns {"policy": [A], "random": [A], ..., "count": [A]} numpy arrays.
  """
  total, count = None, None
  for batch in batches:
    sums, n = _batch_sums(params, put(batch), feature_params, policy=policy,
                          features=features, with_baselines=with_baselines,
                          windows=windows)
    if total is None:
      total, count = sums, n
    else:
      total = {k: total[k] + sums[k] for k in total}
      count = count + n
  if total is None:
    raise ValueError("no validation batches")
  count = np.asarray(count)
  out = {k: np.asarray(v) / np.maximum(count, 1) for k, v in total.items()}
  out["count"] = count
  return out
