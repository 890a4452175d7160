"""What recorded traces say about the ranking problem, before training: the
pure part of `python -m data_pipelines.trace_diagnostics`.

Per agent a (one (layer, KV head)) and trace b, over the ranked set (the
evictable prompt tokens the cache holds when it is evicted: protected
tokens out, the window's tokens only on a sliding-window layer):

  concentration   share of the ranked set's future importance held by its
                  top ceil(fraction * n) tokens (fraction 1%): how few
                  tokens a ranking must get right.
  kind shares     of those top tokens, the share that are digits, other
                  word pieces, spaces/punctuation, or among the first / last
                  64 positions of the context, beside the base rate of each
                  kind among all ranked tokens (what the top tokens are).
  evicted shares  each scorer's evicted share of future importance at small
                  budgets (kvp_jax.evaluation.evicted_share, the metric of
                  the attention-cost suite), geometric mean over heads.
  normalised cost each scorer's all-budget normalised cost per head (1 =
                  the oracle), as the trainer's validation computes it.
  cost variance   of K rankings sampled from a policy (Plackett-Luce,
                  Gumbel noise) per trace: the variance of the normalised
                  cost between traces (of the per-trace means) and within a
                  trace (mean of the per-trace variances). A leave-one-out
                  baseline over the K samples of one trace removes the
                  between-trace part; one baseline across the batch (K = 1)
                  leaves it in the advantages as noise.

Shape letters: A agents, B traces, T token slots, H head_dim, S samples.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kvp_jax import objective

KINDS = ("digit", "word", "space_punct", "first_64", "last_64")
EDGE = 64


def piece_kinds(pieces: Sequence[str]) -> dict[str, np.ndarray]:
  """Per vocabulary id, whether its piece is a digit piece (holds a digit),
  another word piece (holds a letter), or spaces / punctuation only.

  Args:
    pieces: [V] the tokenizer's piece of every id.
  Returns:
    {"digit", "word", "space_punct"}: [V] bool, exactly one true per id.
  """
  digit = np.array([any(c.isdigit() for c in p) for p in pieces])
  word = np.array([any(c.isalpha() for c in p) for p in pieces]) & ~digit
  return {"digit": digit, "word": word, "space_punct": ~(digit | word)}


def token_kinds(tokens: np.ndarray, positions: np.ndarray,
                context_length: np.ndarray,
                vocab_kinds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """KINDS masks of every token slot.

  Args:
    tokens: [B, T] int token ids.
    positions: [B, T] int positions (-1: padding).
    context_length: [B] prompt lengths.
    vocab_kinds: piece_kinds() of the vocabulary ({}: position kinds only).
  Returns:
    {kind: [B, T] bool}.
  """
  out = {}
  if vocab_kinds:
    ids = np.clip(tokens, 0, len(vocab_kinds["digit"]) - 1)
    out = {k: np.asarray(v)[ids] for k, v in vocab_kinds.items()}
  out["first_64"] = (positions >= 0) & (positions < EDGE)
  out["last_64"] = positions >= context_length[:, None] - EDGE
  return out


def _top_mask(importance: np.ndarray, valid: np.ndarray,
              fraction: float) -> np.ndarray:
  """[A, B, T] bool: the top ceil(fraction * n) valid tokens by importance
  (ties to the earlier slot), n = valid tokens of that (agent, trace)."""
  imp = np.where(valid, importance, -np.inf)
  order = np.argsort(-imp, axis=-1, kind="stable")
  rank = np.empty_like(order)
  np.put_along_axis(rank, order, np.arange(imp.shape[-1])[None, None],
                    axis=-1)
  n = valid.sum(-1, keepdims=True)
  top = np.ceil(fraction * n).astype(int)
  return valid & (rank < top)


def concentration(importance: np.ndarray, valid: np.ndarray,
                  fraction: float = 0.01) -> np.ndarray:
  """[A, B] share of the ranked set's importance on its top tokens (NaN
  where the set holds no importance).

  Args:
    importance: [A, B, T] float >= 0.
    valid: [A, B, T] bool, the ranked set.
    fraction: the top share of tokens, in (0, 1].
  """
  if not 0 < fraction <= 1:
    raise ValueError(f"fraction must be in (0, 1], got {fraction}")
  imp = np.where(valid, importance, 0.0).astype(np.float64)
  total = imp.sum(-1)
  top = np.where(_top_mask(importance, valid, fraction), imp, 0.0).sum(-1)
  return np.where(total > 0, top / np.where(total > 0, total, 1.0), np.nan)


def kind_counts(importance: np.ndarray, valid: np.ndarray,
                kinds: Mapping[str, np.ndarray], fraction: float = 0.01
                ) -> dict[str, np.ndarray]:
  """Per agent, how many top / ranked tokens there are, in all and of each
  kind (counts, so that batches add up; kind_shares() divides).

  Args:
    importance, valid: [A, B, T] as concentration(); traces without
      importance for an agent are left out of its counts.
    kinds: {kind: [B, T] bool} (token_kinds()).
    fraction: the top share of tokens.
  Returns:
    {"top": [A], "ranked": [A], "top/<kind>": [A], "ranked/<kind>": [A]}
    int counts.
  """
  top = _top_mask(importance, valid, fraction)
  informative = (np.where(valid, importance, 0.0).sum(-1) > 0)[..., None]
  top, valid = top & informative, valid & informative
  out = {"top": top.sum((1, 2)), "ranked": valid.sum((1, 2))}
  for name, mask in kinds.items():
    m = np.asarray(mask)[None]
    out[f"top/{name}"] = (top & m).sum((1, 2))
    out[f"ranked/{name}"] = (valid & m).sum((1, 2))
  return out


def kind_shares(counts: Mapping[str, np.ndarray]
                ) -> dict[str, tuple[list[float], list[float]]]:
  """{kind: ([A] share of the top tokens of that kind, [A] share of the
  ranked tokens)} from (summed) kind_counts()."""
  kinds = [k.split("/", 1)[1] for k in counts if k.startswith("top/")]
  return {k: ((counts[f"top/{k}"] / np.maximum(counts["top"], 1)).tolist(),
              (counts[f"ranked/{k}"] / np.maximum(counts["ranked"], 1))
              .tolist()) for k in kinds}


@jax.jit
def deterministic_costs(scores: jax.Array, importance: jax.Array,
                        valid: jax.Array) -> jax.Array:
  """[A, B] normalised cost of ranking by scores (argsort, no noise)."""
  return objective.normalised_cost(
      objective.deterministic_order(scores, valid), importance, valid)


def sampled_costs(key: jax.Array, scores: jax.Array, importance: jax.Array,
                  valid: jax.Array, num_samples: int) -> jax.Array:
  """[S, A, B] normalised costs of S Plackett-Luce rankings per trace."""
  def one(k):
    order = objective.gumbel_sort(k, scores, valid)
    return objective.normalised_cost(order, importance, valid)
  return jax.lax.map(one, jax.random.split(key, num_samples))


def cost_variance(costs: np.ndarray, informative: np.ndarray
                  ) -> dict[str, np.ndarray]:
  """Between- and within-trace variance of sampled costs, per agent.

  Args:
    costs: [S, A, B] normalised costs of S sampled rankings per trace.
    informative: [A, B] bool, the traces that count (some importance).
  Returns:
    {"between": [A] variance over traces of the per-trace mean cost,
     "within": [A] mean over traces of the variance over samples (ddof 1),
     "between_share": [A] between / (between + within)}; NaN without two
    informative traces.
  """
  costs = np.asarray(costs, np.float64)
  s = costs.shape[0]
  if s < 2:
    raise ValueError(f"cost_variance needs >= 2 samples per trace, got {s}")
  out = {"between": [], "within": []}
  for a in range(costs.shape[1]):
    c = costs[:, a, np.asarray(informative[a])]                     # [S, B']
    if c.shape[1] < 2:
      out["between"].append(np.nan)
      out["within"].append(np.nan)
      continue
    out["between"].append(c.mean(0).var(ddof=1))
    out["within"].append(c.var(0, ddof=1).mean())
  between, within = (np.array(out[k]) for k in ("between", "within"))
  return {"between": between, "within": within,
          "between_share": between / (between + within)}


def geometric_mean(x: np.ndarray, eps: float = 1e-12) -> float:
  """Geometric mean of the finite entries (floored at eps); NaN if none."""
  x = np.asarray(x, np.float64)
  x = x[np.isfinite(x)]
  return float(np.exp(np.log(np.maximum(x, eps)).mean())) if x.size else \
      math.nan


def markdown(report: Mapping, agent_names: Sequence[str],
             global_agents: Sequence[int]) -> str:
  """The report (trace_diagnostics' JSON) as markdown tables."""
  lines = [f"# Trace diagnostics: {report['store']} ({report['split']}, "
           f"{report['num_traces']} traces)", ""]
  frac = report["fraction"]
  lines += [f"## Concentration: share of future importance on the top "
            f"{100 * frac:g}% of ranked tokens (mean over traces)", "",
            "| agent | share | | agent | share |", "|---|---|---|---|---|"]
  conc = report["concentration"]
  half = (len(agent_names) + 1) // 2
  for i in range(half):
    right = (f"{agent_names[i + half]} | {conc[i + half]:.3f}"
             if i + half < len(agent_names) else " | ")
    lines.append(f"| {agent_names[i]} | {conc[i]:.3f} | | {right} |")
  lines += ["", f"## What the top {100 * frac:g}% tokens are (share of top "
            "tokens / share of all ranked tokens; global layers and all "
            "layers)", "", "| kind | global layers | all layers |",
            "|---|---|---|"]
  for kind, (top, base) in report["top_kinds"].items():
    top, base = np.asarray(top), np.asarray(base)
    g = list(global_agents)
    lines.append(f"| {kind} | {top[g].mean():.3f} / {base[g].mean():.3f} | "
                 f"{top.mean():.3f} / {base.mean():.3f} |")
  budgets = report["budgets"]
  lines += ["", "## Evicted share of future importance at small budgets "
            "(geometric mean over heads; global layers in brackets; lower is "
            "better)", "",
            "| scorer | " + " | ".join(f"b={b}" for b in budgets) + " |",
            "|---" * (len(budgets) + 1) + "|"]
  for name, row in report["evicted_share"].items():
    lines.append(f"| {name} | " + " | ".join(
        f"{row['all'][i]:.4f} [{row['global'][i]:.4f}]"
        for i in range(len(budgets))) + " |")
  lines += ["", "## Normalised cost per head on the global layers (1 = the "
            "oracle; geometric mean over all heads last)", "",
            "| scorer | " + " | ".join(agent_names[a] for a in global_agents)
            + " | all heads |", "|---" * (len(global_agents) + 2) + "|"]
  for name, per_head in report["normalised_cost"].items():
    per_head = np.asarray(per_head)
    lines.append(f"| {name} | " + " | ".join(
        f"{per_head[a]:.3f}" for a in global_agents) +
                 f" | {geometric_mean(per_head):.3f} |")
  if report.get("cost_variance"):
    v = report["cost_variance"]
    lines += ["", f"## Sampled rankings' cost: between- vs within-trace "
              f"variance ({v['num_samples']} Plackett-Luce samples of the "
              f"policy per trace)", "",
              "| agent | between | within | between share |",
              "|---|---|---|---|"]
    for a, name in enumerate(agent_names):
      lines.append(f"| {name} | {v['between'][a]:.4g} | {v['within'][a]:.4g}"
                   f" | {v['between_share'][a]:.3f} |")
  return "\n".join(lines) + "\n"


def scorer_fn(name: str) -> Callable:
  """A LayerView scorer of kvp_jax.scorers by name (for the report)."""
  from kvp_jax import scorers as scorers_lib  # pylint: disable=g-import-not-at-top
  return scorers_lib.get_scorer(name).score
