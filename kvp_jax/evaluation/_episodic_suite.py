"""The "episodic" suite kind: long-conversation QA, every question of a
conversation read from the same compressed state.

Cells: the full cache; each grid scorer as a plain baseline (one cache of
the conversation, prefilled block by block with eviction after every block,
eval.chunk_size; kvp_jax.eviction.answer_compressed), unless plain=False;
EPICACHE (kvp_jax.eviction.answer_conversation: windows clustered into
episodes, one cache per episode scored over its medoid by the in-episode
scorer, episodic.scorer: "kvzip", the paper's max attention, by default, or
"snapkv", SnapKV's pooled mean; each question routed to one; with the
layer_profile's budgets when one is named); and, with "kvp" in the grid and
a blend_weight, EPICACHE_KVP (KVP blended with the same scorer's attention
over the medoid).

  {"kind": "episodic", "sources": [jsonl of long conversation samples]
   and/or "conversations": {"num_conversations": n, "target_length": t,
   "seed": s, "num_facts": f, "max_new_tokens": m} or a list of these
   (generated_conversations: then no two conversations share a source
   dialogue),
   "disjoint_from": specs of conversations this suite's must share no
   source dialogue with (a dev suite's, beside a test suite),
   "episodic": {EpisodicSettings fields, among them "scorer": "kvzip"
   (default) | "snapkv", the in-episode scorer; "rule": "paper" (default)
   | "power", how the layer budgets follow the profile
   (eviction.layer_budgets); "matched_memory": true (default: they sum to
   what the uniform cell keeps, eviction.matched_layer_budgets) | false
   (budget x layers, the window-capped layers' excess going to the
   others)},
   "layer_profile": JSON path ("" = uniform budgets),
   "calibration": the text the profile is made on, when its file does not
   exist yet: {"num_conversations": n, "target_length": t, "seed": s}
   (default: one conversation of the suite's length, seed
   CALIBRATION_SEED) built from chitchat dialogues that no conversation of
   the suite uses, so no evaluated conversation contains it (recorded in
   the file and checked whenever it is read) | "first_conversation" (the
   earlier choice: the first conversation evaluated),
   "alpha": float (absent: the rule's, 1.3 | 1.0), "min_fraction": float,
   "blend_weight": float (adds an EPICACHE_KVP cell),
   "plain": bool (default true),
   "plain_protocols": the plain baselines' protocols (default ["chunked"];
   "once" adds compress-once cells: the whole conversation prefilled, then
   evicted to the budget once, where its full cache fits)}

Change the suite's name when changing these settings: the sample log's key
does not hold them.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from pathlib import Path

import numpy as np

from kvp_jax import eviction as eviction_lib
from kvp_jax import scorers as scorers_lib
from kvp_jax.evaluation import _conversations
from kvp_jax.evaluation import _paired
from kvp_jax.evaluation import _suites
from kvp_jax.evaluation._grid import Evaluated, FULL

EPICACHE = _paired.EPICACHE           # Episodes scored by their medoids.
EPICACHE_KVP = _paired.EPICACHE_KVP   # The same, KVP blended into the score.
FIRST_CONVERSATION = _conversations.FIRST_CONVERSATION
CHUNKED = "chunked"       # EpiCache's, and the plain baselines' default.
PLAIN_PROTOCOLS = (CHUNKED, "once")


@_suites.register
class EpisodicSuite(_suites.SuiteKind):
  kind = "episodic"

  def samples(self, suite: Mapping[str, Any], samples: list, tokenizer):
    """The suite's conversations (generated and/or from its sources);
    every sample must name its conversation."""
    samples = list(samples) + _conversations.generated_conversations(
        suite, tokenizer)
    for sample in samples:
      if "conversation_id" not in sample.metadata:
        raise ValueError(f"sample {sample.id!r} has no metadata "
                         f"conversation_id: an episodic suite needs long "
                         f"conversations (kvp_jax.samples.long_conversations)")
    return samples

  def batches(self, items: Sequence[_suites.Item], size: int):
    """One conversation a batch: its questions share one compressed
    state."""
    del size
    yield from _by_conversation(items).values()

  def run(self, run: _suites.SuiteRun,
          batch: Sequence[_suites.Item]) -> None:
    """Conversation by conversation: the full cache and the plain cells
    prefill each conversation once and answer every question from that
    state; EpiCache cells go through episodic caches."""
    settings = run.settings
    episodic = eviction_lib.EpisodicSettings(
        **dict(settings.get("episodic") or {}))
    for items in _by_conversation(batch).values():
      for c, by_episode in _cells(run, settings, episodic):
        todo = [i for i in items if not run.log.has_all(
            c.cell, [i.sample.id], ("accuracy",))]
        if not todo:
          continue
        rng = c.cell.rng(run.rng)
        if by_episode:
          result = eviction_lib.answer_conversation(
              run.model, c.scorer, c.eviction, [i.sample for i in todo],
              episodic, layer_budgets=_layer_budgets(
                  run.model, settings, episodic, c.eviction, todo[0].sample,
                  [i.sample for i in run.items]),
              rng=rng)
          for row in result:
            row["routed_to_fact"] = row["episode"] == row["fact_episode"]
        else:                     # The full cache, or a plain baseline.
          result = eviction_lib.answer_compressed(
              run.model, c.scorer, c.eviction, [i.sample for i in todo],
              rng=rng)
        for row in result:
          del row["sample"]       # The item's id, which Cell.row writes.
        # cluster: the paired intervals resample conversations, not
        # questions (kvp_jax.evaluation._bootstrap).
        run.log.add(c.cell.row(item, "accuracy", row.pop("value"),
                               cluster=item.sample.metadata["conversation_id"],
                               **row)
                    for item, row in zip(todo, result))


def _by_conversation(items) -> dict[str, list]:
  out: dict[str, list] = {}
  for item in items:
    out.setdefault(item.sample.metadata["conversation_id"], []).append(item)
  return out


def _cells(run: _suites.SuiteRun, settings: Mapping[str, Any],
           episodic: eviction_lib.EpisodicSettings):
  """(Evaluated, by_episode) of an episodic suite: the full cache first (if
  the grid has it), the plain baselines, EpiCache, EpiCache + KVP; every
  compressed cell block-wise (eval.chunk_size) at every grid budget."""
  grid = run.grid
  if grid.include_full:
    yield Evaluated(grid.cell(run.suite, FULL, FULL), None,
                    grid.full_eviction()), False
  cells = []
  if settings.get("plain", True):
    cells += [(n, s, False, p) for p in plain_protocols(settings)
              for n, s in grid.scorers.items()]
  observer = eviction_lib.episode_scorer(episodic.scorer)
  cells.append((EPICACHE, observer, True, CHUNKED))
  if "kvp" in grid.scorers and settings.get("blend_weight") is not None:
    cells.append((EPICACHE_KVP, eviction_lib.MedoidBlendScorer(
        learned=grid.scorers["kvp"], observer=observer,
        weight=float(settings["blend_weight"])), True, CHUNKED))
  for name, scorer, by_episode, protocol in cells:
    for b in grid.budgets:
      yield Evaluated(grid.cell(run.suite, name, b, protocol), scorer,
                      eviction_lib.Eviction(
                          b, protocol=protocol, chunk_size=grid.chunk_size,
                          protected=grid.protected)), by_episode


def plain_protocols(settings: Mapping[str, Any]) -> tuple[str, ...]:
  """The plain baselines' protocols of an episodic suite's settings.

  Raises:
    ValueError: a protocol other than "chunked" and "once".
  """
  protocols = tuple(settings.get("plain_protocols") or (CHUNKED,))
  unknown = sorted(set(protocols) - set(PLAIN_PROTOCOLS))
  if unknown:
    raise ValueError(f"plain_protocols: {unknown} not among "
                     f"{PLAIN_PROTOCOLS}")
  return protocols


def protocols_of(settings: Mapping[str, Any]) -> tuple[str, ...]:
  """Every protocol an episodic suite's cells are logged under."""
  return tuple(dict.fromkeys((CHUNKED,) + plain_protocols(settings)))


def _layer_budgets(model, settings, episodic, eviction, sample,
                   evaluated=()):
  """Sensitivity-aware per-layer budgets from the suite's layer profile, or
  None. The profile is made once per model (on the suite's calibration
  text, with keydiff at the first budget asked for) and reused from its
  file, its calibration text checked against the `evaluated` samples (the
  suite's) each time; the budgets follow episodic.rule and hold what the
  uniform cell holds unless episodic.matched_memory is false. `sample`:
  the conversation being evaluated (the text of "first_conversation")."""
  path = settings.get("layer_profile")
  if not path:
    return None
  calibration = settings.get("calibration") or {}
  if isinstance(calibration, str) and calibration != FIRST_CONVERSATION:
    raise ValueError(f"calibration: {calibration!r} is neither "
                     f"{FIRST_CONVERSATION!r} nor a mapping of "
                     f"num_conversations, target_length, seed")
  if Path(path).is_file():
    profile = eviction_lib.read_profile(path, model)
    if calibration != FIRST_CONVERSATION:
      _conversations.check_disjoint(profile.get("calibration"), evaluated,
                                    path)
    sensitivity = np.asarray(profile["sensitivity"], np.float32)
  else:
    if calibration == FIRST_CONVERSATION:
      prompts = [model.tokenizer.encode(sample.context, add_bos=True)]
      info = {"kind": FIRST_CONVERSATION,
              "conversations": [sample.metadata.get("conversation_id")]}
    else:
      prompts, info = _conversations.calibration_prompts(
          model.tokenizer, settings, evaluated)
    sensitivity = eviction_lib.load_or_profile(
        path, model, prompts, scorers_lib.get_scorer("keydiff"),
        eviction_lib.Eviction(eviction.budget, protocol="chunked",
                              chunk_size=eviction.chunk_size,
                              protected=eviction.protected),
        calibration=info)
  rule = episodic.rule
  alpha = settings.get("alpha")
  alpha = None if alpha is None else float(alpha)
  min_fraction = float(settings.get("min_fraction", 0.25))
  if episodic.matched_memory:
    return eviction_lib.matched_layer_budgets(
        model.config, sensitivity, eviction.budget,
        protected=eviction.protected, min_fraction=min_fraction, rule=rule,
        alpha=alpha)
  floor = max(eviction.protected.size, int(min_fraction * eviction.budget))
  return eviction_lib.layer_budgets(
      sensitivity, eviction.budget * model.config.num_layers, rule=rule,
      alpha=alpha, floor=floor,
      caps=eviction_lib.window_caps(model.config, floor))
