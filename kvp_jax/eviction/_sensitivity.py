"""Sensitivity-aware layer budgets (EpiCache's layer-wise allocation).

Some layers' keys change much more than others' when the cache beneath them
is compressed. EpiCache profiles that once per model and gives the sensitive
layers more of the total budget. Here:

  profile_sensitivity  for calibration prompts, the keys of a probe (the
                       prompt's last `probe_tokens` tokens) computed once
                       over the full cache of the prefix and once over the
                       prefix's cache compressed by a given scorer and
                       eviction; a layer's sensitivity is the mean cosine
                       distance 1 - cos(k_full, k_compressed) over the
                       probe's tokens and KV heads (EpiCache compares them
                       the same way, under a block-sparse mask).
  layer_budgets        a total budget (slots per head over all layers)
                       shared by a rule (RULES), every layer at least its
                       floor, at most its cap; integers summing to the total.
                       "paper" (the default; ml-epicache's
                       allocate_layer_budget): weights (1 - minmax(sim))**1.3
                       over the layers' key similarities sim = 1 -
                       sensitivity, i.e. minmax(sensitivity)**alpha, budgets
                       proportional to them, clamped to [floor, cap] (the
                       proportion rescaled so the clamped sum is the total);
                       "power" (this package's earlier rule): the floor plus
                       a share of the rest in proportion to
                       sensitivity**alpha (alpha 1).
  matched_layer_budgets
                       layer_budgets memory-matched to the uniform cell of
                       the same budget b: the total is uniform_total, the
                       slots the uniform cell keeps (sum over layers of
                       min(b, cap_l), cap_l a sliding-window layer's window,
                       unbounded for a global layer), so an allocation holds
                       the same bytes as the uniform cell.
  load_or_profile      the profile as JSON (kvp_jax._files.atomic_write_json),
                       computed once and reused while the model's
                       fingerprint matches.

A layer's keys depend only on the layers below it, so layer 0's keys never
change (sensitivity 0: it gets the floor), and a layer's sensitivity is that
of its input to the compression of all the layers beneath it, not of its own
cache alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kvp_jax import _files
from kvp_jax import cache as cache_lib
from kvp_jax import inference
from kvp_jax.eviction._runtime import prefill_compressed
from kvp_jax.eviction._spec import Eviction
from kvp_jax.model import Pretrained

PROFILE_KIND = "kvp_jax.layer_sensitivity"
PROFILE_VERSION = 1
# How layer_budgets shares a total (see the module docstring).
RULES = ("paper", "power")
# The exponent of each rule when none is given: ml-epicache's POWER for
# Qwen2.5 (1.3; 1.1 for Llama), and the earlier rule's 1.
DEFAULT_ALPHA = {"paper": 1.3, "power": 1.0}


@jax.jit
def _key_distance(full: jax.Array, compressed: jax.Array) -> jax.Array:
  """Mean cosine distance of two key sets [B, T, K, H] -> []."""
  a, b = full.astype(jnp.float32), compressed.astype(jnp.float32)
  cos = jnp.sum(a * b, -1) / jnp.maximum(
      jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1), 1e-12)
  return jnp.mean(1.0 - cos)


def profile_sensitivity(model: Pretrained, prompts: Sequence[Sequence[int]],
                        scorer, eviction: Eviction, probe_tokens: int = 128,
                        rng: jax.Array | None = None) -> np.ndarray:
  """Per-layer key deviation under compression, averaged over prompts.

  Args:
    model: the decoder.
    prompts: calibration token lists (BOS first), each longer than
      probe_tokens + the budget (or nothing is evicted).
    scorer: the scorer that compresses the prefix (a query-free or a
      prefill-attention one; not the oracle).
    eviction: the budget and protocol of the compression.
    probe_tokens: tokens at the end of each prompt whose keys are compared.
    rng: PRNG key for random scorers.
  Returns:
    [L] float32 sensitivities in [0, 2] (0: the keys do not change).
  Raises:
    ValueError: no prompts, a prompt too short, or a full-cache eviction.
  """
  if eviction.full:
    raise ValueError("profiling needs a budget: a full cache changes nothing")
  if not prompts:
    raise ValueError("profiling needs at least one calibration prompt")
  rng = jax.random.key(0) if rng is None else rng
  config, params = model.config, model.params
  rows = []
  for i, prompt in enumerate(prompts):
    prompt = list(prompt)
    if len(prompt) <= probe_tokens + eviction.budget:
      raise ValueError(f"calibration prompt {i} has {len(prompt)} tokens; it "
                       f"needs more than probe_tokens + budget = "
                       f"{probe_tokens + eviction.budget} for the budget to "
                       f"evict anything")
    prefix, probe = prompt[:-probe_tokens], prompt[-probe_tokens:]
    _, _, _, full = inference.prefill_prompts(model, [prompt], capture=True)
    pre = prefill_compressed(model, scorer, eviction, [prefix], probe_tokens,
                             rng=jax.random.fold_in(rng, i))
    positions = jnp.asarray(len(prefix) + np.arange(probe_tokens),
                            jnp.int32)[None]
    _, _, comp = inference.extend(config, params, pre.cache,
                                  jnp.asarray(probe, jnp.int32)[None],
                                  positions, capture=True)
    rows.append([float(_key_distance(f.k[:, -probe_tokens:], c.k))
                 for f, c in zip(full, comp)])
  return np.asarray(rows, np.float32).mean(0)


def rule_weights(sensitivity: Sequence[float], rule: str = "paper",
                 alpha: float | None = None) -> np.ndarray:
  """[L] allocation weights of a rule.

  "paper": minmax(sensitivity)**alpha, which is ml-epicache's
  (1 - minmax(sim))**alpha for the similarities sim = 1 - sensitivity
  (1 - minmax(1 - d) = minmax(d)); all ones when every layer is alike.
  "power": max(sensitivity, 0)**alpha. alpha = 0 makes either uniform.

  Args:
    sensitivity: [L] per-layer sensitivities (profile_sensitivity).
    rule: one of RULES.
    alpha: the exponent (None: DEFAULT_ALPHA[rule]).
  Returns:
    [L] float64 weights >= 0.
  Raises:
    ValueError: an unknown rule, a negative or non-finite alpha, non-finite
      sensitivities.
  """
  if rule not in RULES:
    raise ValueError(f"unknown layer budget rule {rule!r}; known: {RULES}")
  alpha = DEFAULT_ALPHA[rule] if alpha is None else float(alpha)
  if alpha < 0 or not np.isfinite(alpha):
    raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
  s = np.asarray(sensitivity, np.float64)
  if s.ndim != 1 or len(s) == 0 or not np.all(np.isfinite(s)):
    raise ValueError(f"sensitivity must be a non-empty finite 1-D sequence, "
                     f"got {sensitivity!r}")
  if alpha == 0:
    return np.ones(len(s))
  if rule == "power":
    return np.maximum(s, 0.0) ** alpha
  spread = s.max() - s.min()
  if spread <= 0:
    return np.ones(len(s))
  return ((s - s.min()) / spread) ** alpha


def _floor_share(weight, total, floor, cap) -> np.ndarray:
  """The "power" rule's real shares: every layer its floor, the rest in
  proportion to weight, a layer never above its cap (the excess shared
  again among the others)."""
  share = floor.astype(np.float64)
  free = cap > floor
  remaining = float(total - floor.sum())
  while remaining > 0 and free.any():
    w = np.where(free, weight, 0.0)
    if w.sum() <= 0:
      w = free.astype(np.float64)
    give = remaining * w / w.sum()
    over = free & (share + give > cap)
    if not over.any():
      share += give
      remaining = 0.0
      break
    remaining -= float(np.sum(cap[over] - share[over]))
    share[over] = cap[over]
    free &= ~over
  return share


def _clamped_share(weight, total, floor, cap) -> np.ndarray:
  """The "paper" rule's real shares: clip(lam * weight, floor, cap) with lam
  set (by bisection) so they sum to the total. What the weighted layers
  cannot take (all at their caps) goes to the others in equal parts."""
  pos = weight > 0
  if not pos.any():
    return _clamped_share(np.ones(len(weight)), total, floor, cap)
  most = np.where(pos, cap, floor)
  if most.sum() <= total:
    rest = ~pos & (cap > floor)
    if not rest.any():
      return most
    share = most.copy()
    share[rest] = _clamped_share(np.ones(int(rest.sum())),
                                 total - most[~rest].sum(), floor[rest],
                                 cap[rest])
    return share
  lo, hi = 0.0, float(total) / weight[pos].min()
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if np.clip(mid * weight, floor, cap).sum() < total:
      lo = mid
    else:
      hi = mid
  share = np.clip(hi * weight, floor, cap)
  # The bisection's residual (a tiny fraction of a slot), from the layers
  # strictly inside their bounds.
  inside = (share > floor) & (share < cap)
  if inside.any():
    share[inside] -= (share.sum() - total) * weight[inside] / weight[
        inside].sum()
  return share


def layer_budgets(sensitivity: Sequence[float], total: int, *,
                  rule: str = "paper", alpha: float | None = None,
                  floor: int | Sequence[int],
                  caps: Sequence[int | None] | None = None
                  ) -> tuple[int, ...]:
  """Splits `total` slots per head among layers by sensitivity.

  "paper" (the default, ml-epicache's rule, memory-exact): a layer gets
  clip(lam * w_l, floor_l, cap_l), w = minmax(sensitivity)**alpha (alpha
  1.3), lam such that the budgets sum to the total (ml-epicache takes lam =
  total / sum(w) and then raises the layers below the floor, overshooting
  the total; here the others give those slots back). "power" (the earlier
  rule): every layer first gets its floor and the rest is shared in
  proportion to max(sensitivity, 0)**alpha (alpha 1), a layer never above
  its cap (the excess is shared again among the others). Either way weights
  that are all 0 share uniformly, and the real shares are rounded to
  integers by largest remainder (ties to the more sensitive, then lower,
  layer). Among uncapped layers the budgets are non-decreasing in
  sensitivity.

  Args:
    sensitivity: [L] per-layer sensitivities (profile_sensitivity: a key
      cosine distance; higher = more sensitive).
    total: slots per head over all layers (matched_layer_budgets: the
      uniform cell's).
    rule: one of RULES.
    alpha: the sharpness (None: DEFAULT_ALPHA[rule]); 0 is uniform, larger
      favours sensitive layers.
    floor: the least a layer keeps (at least the protected set's size), one
      for all layers or one per layer.
    caps: per layer the most it can use (a sliding-window layer's window),
      None for no cap.
  Returns:
    L ints summing to `total` (less only when every layer is at its cap).
  Raises:
    ValueError: an unknown rule, a negative alpha, a total below the sum of
      the floors, a cap below its floor, non-finite sensitivities.
  """
  weight = rule_weights(sensitivity, rule, alpha)
  n = len(weight)
  floors = np.broadcast_to(np.asarray(floor, np.float64), (n,)) if np.ndim(
      floor) == 0 else np.asarray(floor, np.float64)
  if floors.shape != (n,):
    raise ValueError(f"{len(floors)} floors for {n} layers")
  if total < floors.sum():
    raise ValueError(f"total budget {total} is below " + (
        f"{n} layers x the floor {floor}" if np.ndim(floor) == 0 else
        f"the layers' floors, {int(floors.sum())} in all"))
  cap = np.array([np.inf if c is None else c for c in (caps or [None] * n)],
                 np.float64)
  if len(cap) != n:
    raise ValueError(f"{len(cap)} caps for {n} layers")
  if np.any(cap < floors):
    i = int(np.argmax(cap < floors))
    raise ValueError(f"a layer cap {cap[i]:g} is below the floor "
                     f"{floors[i]:g}")
  share = (_clamped_share if rule == "paper" else _floor_share)(
      weight, total, floors, cap)
  budgets = np.floor(share + 1e-9).astype(np.int64)
  short = min(total, int(np.sum(np.minimum(cap, total)))) - int(budgets.sum())
  frac = share - budgets
  # Largest remainder first; ties to the more sensitive, then lower layer.
  order = sorted(range(n), key=lambda i: (-frac[i], -weight[i], i))
  while short > 0:
    grew = False
    for i in order:
      if short <= 0:
        break
      if budgets[i] + 1 <= cap[i]:
        budgets[i] += 1
        short -= 1
        grew = True
    if not grew:
      break
  return tuple(int(b) for b in budgets)


def layer_caps(config, protected: cache_lib.Protected
               ) -> tuple[int | None, ...]:
  """Per layer the most slots it keeps after an eviction: a sliding-window
  layer's window (at least the protected set, as the episodic prefill and
  cache.window_capped_budgets round it), None for a global layer."""
  return tuple(None if config.layer_window(i) is None
               else max(config.layer_window(i), protected.size)
               for i in range(config.num_layers))


def uniform_total(config, budget: int, protected: cache_lib.Protected) -> int:
  """Slots per head the uniform cell of budget b keeps over all layers:
  sum over layers of min(b, cap_l) (cache.window_capped_budgets)."""
  return int(sum(cache_lib.window_capped_budgets(config, budget, protected)))


def matched_layer_budgets(config, sensitivity: Sequence[float], budget: int,
                          *, protected: cache_lib.Protected,
                          min_fraction: float = 0.25, rule: str = "paper",
                          alpha: float | None = None) -> tuple[int, ...]:
  """Sensitivity-aware budgets that hold what the uniform cell holds.

  The total is uniform_total(config, budget, protected) (not budget x L: a
  sliding-window layer keeps at most its window, so the uniform cell keeps
  less, and the excess must not go to the global layers); a layer keeps
  between min(floor, cap_l) and cap_l (layer_caps), floor =
  max(protected.size, int(min_fraction x budget)) (ml-epicache: a quarter
  of the budget). The budgets sum to the total exactly, so the compressed
  caches hold the same bytes as the uniform cell's.

  Args:
    config: the DecoderConfig.
    sensitivity: [L] per-layer sensitivities.
    budget: the uniform cell's budget per head b.
    protected: the always-kept tokens (the least any layer keeps).
    min_fraction: the floor as a fraction of b, in [0, 1].
    rule, alpha: the allocation rule (layer_budgets).
  Returns:
    L ints summing to uniform_total(config, budget, protected).
  Raises:
    ValueError: a budget below the protected set, a min_fraction outside
      [0, 1], a bad profile or rule.
  """
  budget = cache_lib.check_budget(budget, protected)
  if not 0.0 <= min_fraction <= 1.0:
    raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction!r}")
  if len(sensitivity) != config.num_layers:
    raise ValueError(f"{len(sensitivity)} layer sensitivities for a model of "
                     f"{config.num_layers} layers")
  caps = layer_caps(config, protected)
  floor = max(protected.size, int(min_fraction * budget))
  floors = [floor if c is None else min(floor, c) for c in caps]
  return layer_budgets(sensitivity, uniform_total(config, budget, protected),
                       rule=rule, alpha=alpha, floor=floors, caps=caps)


def window_caps(config, floor: int) -> tuple[int | None, ...]:
  """Per layer the most slots it can use: a sliding-window layer's window
  (at least `floor`), None for a global layer. The earlier, unmatched
  allocation's caps (budget x L shared with them holds more than the
  uniform cell; matched_layer_budgets uses layer_caps)."""
  return tuple(None if config.layer_window(i) is None
               else max(config.layer_window(i), floor)
               for i in range(config.num_layers))


def read_profile(path: str | os.PathLike[str], model: Pretrained) -> dict:
  """A saved profile, checked against the model.

  Raises:
    ValueError: not a profile, or one of another model (fingerprint or
      layer count), naming the file.
  """
  path = Path(path)
  try:
    profile = json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not a JSON layer profile ({e})") from None
  if not isinstance(profile, dict) or profile.get("kind") != PROFILE_KIND:
    raise ValueError(f"{path}: not a layer sensitivity profile (kind "
                     f"{PROFILE_KIND!r} expected)")
  if profile.get("model_fingerprint") != model.fingerprint:
    raise ValueError(f"{path}: profiled on model "
                     f"{profile.get('model_fingerprint')!r}, not on this one "
                     f"({model.fingerprint!r}); delete it to profile again")
  s = profile.get("sensitivity")
  if not isinstance(s, list) or len(s) != model.config.num_layers:
    raise ValueError(f"{path}: {len(s) if isinstance(s, list) else 'no'} "
                     f"layer sensitivities for a model of "
                     f"{model.config.num_layers} layers")
  return profile


def load_or_profile(path: str | os.PathLike[str], model: Pretrained,
                    prompts: Sequence[Sequence[int]], scorer,
                    eviction: Eviction, probe_tokens: int = 128,
                    rng: jax.Array | None = None,
                    calibration: Mapping[str, Any] | None = None
                    ) -> np.ndarray:
  """The model's [L] layer sensitivities from `path`, profiled and saved
  there first if the file does not exist yet.

  A saved profile is reused whatever budget, scorer or prompts are passed
  now (they are recorded in the file): it is one profile per model; delete
  the file to profile again. `calibration`: what the prompts are (recorded
  as the file's "calibration", for the caller to check on reuse).
  """
  path = Path(path)
  if path.is_file():
    return np.asarray(read_profile(path, model)["sensitivity"], np.float32)
  s = profile_sensitivity(model, prompts, scorer, eviction, probe_tokens,
                          rng=rng)
  _files.atomic_write_json(path, {
      "kind": PROFILE_KIND, "version": PROFILE_VERSION,
      "model_fingerprint": model.fingerprint,
      "num_layers": model.config.num_layers, "scorer": scorer.name,
      "budget": eviction.budget, "protocol": eviction.protocol,
      "chunk_size": eviction.chunk_size, "probe_tokens": probe_tokens,
      "num_prompts": len(prompts),
      **({"calibration": dict(calibration)} if calibration else {}),
      "sensitivity": [float(x) for x in s]})
  return s
