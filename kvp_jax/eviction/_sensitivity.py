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
  layer_budgets        a total budget (budget x layers per head) shared in
                       proportion to sensitivity**alpha, every layer at least
                       `floor` (the protected set or more), a sliding-window
                       layer at most its window (the excess goes to the
                       others); integers summing to the total.
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
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kvp_jax import _files
from kvp_jax import inference
from kvp_jax.eviction._runtime import prefill_compressed
from kvp_jax.eviction._spec import Eviction
from kvp_jax.model import Pretrained

PROFILE_KIND = "kvp_jax.layer_sensitivity"
PROFILE_VERSION = 1


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


def layer_budgets(sensitivity: Sequence[float], total: int, *,
                  alpha: float = 1.0, floor: int,
                  caps: Sequence[int | None] | None = None
                  ) -> tuple[int, ...]:
  """Splits `total` slots per head among layers by sensitivity**alpha.

  Every layer first gets `floor`; the rest is shared in proportion to
  max(sensitivity, 0)**alpha (uniformly when every weight is 0, or with
  alpha = 0), a layer never above its cap (the excess is shared again among
  the others), then rounded to integers by largest remainder. Among uncapped
  layers the budgets are non-decreasing in sensitivity.

  Args:
    sensitivity: [L] per-layer sensitivities (profile_sensitivity).
    total: slots per head over all layers (e.g. budget x L).
    alpha: the sharpness; 0 is uniform, larger favours sensitive layers.
    floor: the least a layer keeps (at least the protected set's size).
    caps: per layer the most it can use (a sliding-window layer's window),
      None for no cap.
  Returns:
    L ints summing to `total` (less only when every layer is at its cap).
  Raises:
    ValueError: a negative alpha, a total below L x floor, a cap below the
      floor, non-finite sensitivities.
  """
  s = np.asarray(sensitivity, np.float64)
  n = len(s)
  if s.ndim != 1 or n == 0 or not np.all(np.isfinite(s)):
    raise ValueError(f"sensitivity must be a non-empty finite 1-D sequence, "
                     f"got {sensitivity!r}")
  if alpha < 0 or not np.isfinite(alpha):
    raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
  if total < n * floor:
    raise ValueError(f"total budget {total} is below {n} layers x the floor "
                     f"{floor}")
  cap = np.array([np.inf if c is None else c for c in (caps or [None] * n)],
                 np.float64)
  if len(cap) != n:
    raise ValueError(f"{len(cap)} caps for {n} layers")
  if np.any(cap < floor):
    raise ValueError(f"a layer cap {cap.min():g} is below the floor {floor}")
  weight = np.maximum(s, 0.0) ** alpha if alpha > 0 else np.ones(n)
  share = np.full(n, float(floor))
  free = cap > floor
  remaining = float(total - n * floor)
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
  budgets = np.floor(share + 1e-9).astype(np.int64)
  short = min(total, int(np.sum(np.minimum(cap, total)))) - int(budgets.sum())
  frac = share - budgets
  # Largest remainder first; ties to the more sensitive, then lower layer.
  for i in sorted(range(n), key=lambda i: (-frac[i], -weight[i], i)):
    if short <= 0:
      break
    if budgets[i] + 1 <= cap[i]:
      budgets[i] += 1
      short -= 1
  return tuple(int(b) for b in budgets)


def window_caps(config, floor: int) -> tuple[int | None, ...]:
  """Per layer the most slots it can use: a sliding-window layer's window
  (at least `floor`), None for a global layer."""
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
                    rng: jax.Array | None = None) -> np.ndarray:
  """The model's [L] layer sensitivities from `path`, profiled and saved
  there first if the file does not exist yet.

  A saved profile is reused whatever budget, scorer or prompts are passed
  now (they are recorded in the file): it is one profile per model; delete
  the file to profile again.
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
      "sensitivity": [float(x) for x in s]})
  return s
