"""The trace diagnostics over a store's split (data_pipelines.trace_stats's
statistics, gathered batch by batch): run() -> a JSON-ready report,
write() -> diagnostics.json and diagnostics.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from data_pipelines import trace_stats
from kvp_jax import _files
from kvp_jax import cache as cache_lib


def _view(keys, values, inputs, context_length):
  """A LayerView of the agents as KV heads ([B, A, ...]), over the slots the
  cache holds when it is evicted (as the trainer's validation builds it)."""
  from kvp_jax import scorers as scorers_lib  # pylint: disable=g-import-not-at-top
  return scorers_lib.LayerView(
      keys=jnp.swapaxes(keys, 0, 1), values=jnp.swapaxes(values, 0, 1),
      positions=jnp.swapaxes(jnp.where(inputs["held"], inputs["positions"],
                                       -1), 0, 1),
      context_length=context_length)


def run(config, workdir: str | Path, *, split: str = "validation",
        policy: str | None = None,
        scorers: Sequence[str] | None = None,
        budgets: Sequence[int] = (64, 128, 256), fraction: float = 0.01,
        num_samples: int = 8, max_batches: int | None = None, seed: int = 0,
        progress: bool = True) -> dict:
  """The report of one split of the config's trace store; `scorers`:
  default, the registered query-free scorers.

  Raises:
    ValueError: no traces in the split, an unknown scorer, or a policy of
      another model or agent count.
  """
  from kvp_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from kvp_jax import policy as policy_lib  # pylint: disable=g-import-not-at-top
  from kvp_jax import training  # pylint: disable=g-import-not-at-top
  from kvp_jax.evaluation import _evicted_share  # pylint: disable=g-import-not-at-top
  from kvp_jax import scorers as scorers_lib  # pylint: disable=g-import-not-at-top
  if scorers is None:
    scorers = scorers_lib.scorers_in("query_free")
  score_fns = {name: trace_stats.scorer_fn(name) for name in scorers
               if name != "random"}
  job = training.prepare(config, training.TrainConfig.from_config(config),
                         workdir)
  store = job.store
  if not store.records_in(split):
    raise ValueError(f"{store.path} has no {split!r} traces")
  artifact = None
  if policy:
    artifact = policy_lib.load_artifact(policy)
    if artifact.model_fingerprint != store.metadata["model"]["fingerprint"]:
      raise ValueError(f"{policy} was trained on another model than the "
                       f"one {store.path} was recorded with")
    if policy_lib.num_agents_of(artifact.params) != len(job.agent_names):
      raise ValueError(f"{policy} has {policy_lib.num_agents_of(artifact.params)}"
                       f" agents, the store's layers {len(job.agent_names)}")
  vocab = _vocab_kinds(config)
  key = jax.random.key(seed)
  names = ["oracle", *scorers] + (["kvp"] if artifact else [])
  shares = {n: [] for n in names}              # [B, A, budgets] per batch
  costs = {n: [] for n in names}               # [A, B]
  conc, sampled, informative, counts = [], [], [], {}
  count = 0
  batches = list(data_lib.eval_batches(store, job.eval_input, split,
                                       max_batches))
  for step, batch in enumerate(tqdm(batches, desc="trace diagnostics",
                                    unit="batch", disable=not progress)):
    w = np.asarray(batch["weight"]) > 0
    keys, values = job.features(batch, job.feature_params)       # [A, B, T, H]
    inputs = training.agent_inputs(batch, keys, job.windows)
    imp = np.asarray(inputs["importance"])
    valid = np.asarray(inputs["valid"])
    scores = {"oracle": inputs["importance"]}
    view = _view(keys, values, inputs, batch["context_length"])
    for name, fn in score_fns.items():
      scores[name] = jnp.swapaxes(fn(view), 0, 1)
    if "random" in scorers:
      scores["random"] = jax.random.uniform(jax.random.fold_in(key, step),
                                            imp.shape)
    if artifact:
      scores["kvp"] = policy_lib.apply_agents(
          artifact.agent_config, artifact.params, keys, values,
          inputs["positions"], inputs["valid"], inputs["context_length"],
          inputs["held"])
    held_pos = jnp.swapaxes(jnp.where(inputs["held"], inputs["positions"], -1),
                            0, 1)                                  # [B, A, T]
    for name, s in scores.items():
      share, _ = _evicted_share.evicted_share(
          jnp.swapaxes(s, 0, 1), jnp.swapaxes(inputs["importance"], 0, 1),
          held_pos, jnp.asarray(batch["context_length"]), budgets=tuple(budgets),
          protected=cache_lib.Protected(job.eval_input.num_sinks,
                                             job.eval_input.num_recent))
      shares[name].append(np.asarray(share)[w])
      costs[name].append(np.asarray(trace_stats.deterministic_costs(
          s, inputs["importance"], inputs["valid"]))[:, w])
    conc.append(trace_stats.concentration(imp, valid, fraction)[:, w])
    kinds = trace_stats.token_kinds(
        np.asarray(batch["tokens"]), np.asarray(batch["positions"]),
        np.asarray(batch["context_length"]), vocab)
    for k, v in trace_stats.kind_counts(imp[:, w], valid[:, w], {
        k: m[w] for k, m in kinds.items()}, fraction).items():
      counts[k] = counts.get(k, 0) + v
    informative.append((np.where(valid, imp, 0).sum(-1) > 0)[:, w])
    if artifact:
      sampled.append(np.asarray(trace_stats.sampled_costs(
          jax.random.fold_in(key, 10_000 + step), scores["kvp"],
          inputs["importance"], inputs["valid"], num_samples))[:, :, w])
    count += int(w.sum())
  global_agents = [a for a, win in enumerate(job.windows) if not win]
  report = {
      "store": str(store.path), "split": split, "num_traces": count,
      "fraction": fraction, "budgets": list(budgets),
      "agents": job.agent_names, "global_agents": global_agents,
      "concentration": np.nanmean(np.concatenate(conc, 1), 1).tolist(),
      "top_kinds": trace_stats.kind_shares(counts),
      "evicted_share": {}, "normalised_cost": {},
  }
  for name in names:
    agg = _evicted_share.aggregate_evicted_share(
        np.concatenate(shares[name], 0)[:, :, None],   # [B, A, 1, budgets]
        global_layers=global_agents)
    report["evicted_share"][name] = {k: np.asarray(agg[k]).tolist()
                                     for k in ("all", "global", "local")}
    c = np.concatenate(costs[name], 1)
    inf = np.concatenate(informative, 1)
    report["normalised_cost"][name] = [
        float(c[a][inf[a]].mean()) if inf[a].any() else float("nan")
        for a in range(c.shape[0])]
  if artifact:
    v = trace_stats.cost_variance(np.concatenate(sampled, 2),
                                  np.concatenate(informative, 1))
    report["cost_variance"] = {"num_samples": num_samples, "policy": policy,
                               **{k: np.asarray(x).tolist()
                                  for k, x in v.items()}}
  return report


def _vocab_kinds(config) -> dict[str, np.ndarray]:
  """piece_kinds() of the config's model's tokenizer ({} without one)."""
  from kvp_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  tok = model_lib.load_model(config.model).tokenizer
  if tok is None:
    return {}
  sp = tok.processor
  return trace_stats.piece_kinds([sp.IdToPiece(i)
                                  for i in range(sp.GetPieceSize())])


def write(report: dict, out_dir: Path) -> list[Path]:
  """diagnostics.json and diagnostics.md, each written atomically."""
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  js, md = out_dir / "diagnostics.json", out_dir / "diagnostics.md"
  _files.atomic_write(js, json.dumps(report, indent=1) + "\n")
  _files.atomic_write(md, trace_stats.markdown(report, report["agents"],
                                               report["global_agents"]))
  return [js, md]
