"""The scorer interface and the registry of scorers by name.

A scorer maps a LayerView to one score per slot, [batch, kv_heads, slots]
float32: higher = keep. Sorting the scores (descending) ranks the slots for
every budget at once. Empty slots (position -1) score -inf; slots a rule
always keeps (sinks, a recent window) score +inf.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, ClassVar

import jax
import jax.numpy as jnp

from kvp_jax.scorers._view import LayerView

# What a scorer may need beyond the cache: LayerView's optional fields, and
# "rng" (a PRNG key passed to `score`).
NEEDS = frozenset({"queries", "attention_sums", "attention_counts",
                   "attention_sq_sums", "importance", "rng"})
# The needs that only a prefill with captured q/k/v can fill.
PREFILL_ATTENTION = frozenset({"queries", "attention_sums", "attention_counts",
                               "attention_sq_sums"})
# A scorer's family follows from what it declares (family_of): "learned"
# (a trained policy: `learned = True`), "oracle" (reads the future),
# "query_aware" (reads the prefill's queries or attention), "query_free"
# (the cache, positions and a key only). Reports compare a policy with the
# best scorer of each baseline family.
FAMILIES = ("query_free", "query_aware", "learned", "oracle")
BASELINE_FAMILIES = ("query_free", "query_aware")


class MissingInputError(ValueError):
  """A scorer was called without an input it declares in `needs`."""


@dataclasses.dataclass(frozen=True)
class Scorer:
  """Base class: subclasses set `name` and `needs` and implement `_score`.

  `score` checks the inputs, calls the rule, casts to float32 and sets empty
  slots to -inf, so every rule honours the same contract.

  Every scorer is also a pytree: the fields named in `array_fields` (a
  learned scorer's params) are its leaves, every other field is static. So a
  scorer is passed to jitted functions as an ordinary argument, its arrays
  traced and its settings part of the compiled program's key.
  """
  name: ClassVar[str] = ""
  needs: ClassVar[frozenset[str]] = frozenset()
  learned: ClassVar[bool] = False
  array_fields: ClassVar[tuple[str, ...]] = ()

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    jax.tree_util.register_pytree_node(cls, _flatten,
                                       functools.partial(_unflatten, cls))

  @property
  def needs_prefill_attention(self) -> bool:
    """The rule reads prefill queries or attention statistics, so the
    context must be prefilled with capture (during decoding only the
    attention moments can be kept running; see can_evict_while_decoding)."""
    return bool(self.needs & PREFILL_ATTENTION)

  @property
  def needs_future(self) -> bool:
    """The rule reads the future importance (the oracle): only an
    evaluation that knows the continuation can run it."""
    return "importance" in self.needs

  @property
  def can_evict_while_decoding(self) -> bool:
    """The rule can rescore the cache during decoding (protocol "decode"):
    it needs nothing beyond the cache (and a key), or only the attention
    moments, which the decode keeps running (kvp_jax.eviction._moments).
    Rules that read prefill queries (TOVA, SnapKV) or the future cannot."""
    return not ("queries" in self.needs or self.needs_future)

  def identity(self) -> dict:
    """The settings its results depend on beyond its name, as a JSON-able
    mapping (part of an evaluation cell's identity): every field of a plain
    value (number, string, bool) that differs from its default, the budget
    aside (a cell has its own). Empty for a scorer built with its defaults,
    so results made with the defaults keep their identity; a rule whose
    defaults change compares some fields with the earlier ones instead
    (RoCo)."""
    return self._differing({})

  def _differing(self, earlier: dict) -> dict:
    """Fields that differ from `earlier` (those it names) or else from
    their defaults."""
    if not dataclasses.is_dataclass(self):
      return {}
    out = {}
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if f.name == "budget" or not isinstance(
          value, (bool, int, float, str)):
        continue
      base = earlier.get(f.name, f.default)
      if base is not dataclasses.MISSING and value != base:
        out[f.name] = value
    return out

  def for_decoding(self) -> "Scorer":
    """The scorer to evict with during decoding (protocol "decode"): this
    one by default; RoCo keeps a wider recent window there, as EasyKV."""
    return self

  def for_budget(self, budget: int | None) -> "Scorer":
    """The scorer to evict to `budget` with. One ranking serves every budget
    for most rules (this default); a rule that depends on the budget (RoCo)
    returns a copy set for it. The eviction runtime calls it per eviction."""
    del budget
    return self

  def score(self, view: LayerView, rng: jax.Array | None = None) -> jax.Array:
    """Scores every slot of a layer.

    Args:
      view: the layer's cache and the statistics named in `needs`.
      rng: a PRNG key, required when "rng" is in `needs`.
    Returns:
      [batch, kv_heads, slots] float32, higher = keep; -inf at empty slots.
    Raises:
      MissingInputError: an input named in `needs` is absent.
    """
    missing = sorted(n for n in self.needs
                     if (rng is None if n == "rng" else not view.has(n)))
    if missing:
      raise MissingInputError(
          f"scorer {self.name!r} needs {missing}, which "
          f"{'is' if len(missing) == 1 else 'are'} missing (needs = "
          f"{sorted(self.needs)}; fill the LayerView field / pass rng=)")
    if "queries" in self.needs and view.query_positions is None:
      raise MissingInputError(
          f"scorer {self.name!r} needs query_positions with queries")
    scores = self._score(view, rng).astype(jnp.float32)
    return jnp.where(view.valid, scores, -jnp.inf)

  def __call__(self, view: LayerView, rng: jax.Array | None = None):
    return self.score(view, rng)

  def _score(self, view: LayerView, rng: jax.Array | None) -> jax.Array:
    """The rule: [batch, kv_heads, slots] scores (empty slots may be any)."""
    raise NotImplementedError


def _flatten(scorer: Scorer):
  names = scorer.array_fields
  static = tuple((f.name, getattr(scorer, f.name))
                 for f in dataclasses.fields(scorer) if f.name not in names)
  return tuple(getattr(scorer, n) for n in names), static


def _unflatten(cls, static, children):
  scorer = object.__new__(cls)
  for name, value in static:
    object.__setattr__(scorer, name, value)
  for name, value in zip(cls.array_fields, children):
    object.__setattr__(scorer, name, value)
  return scorer


_REGISTRY: dict[str, Callable[..., Scorer]] = {}


def register(factory):
  """Registers a scorer class (or factory with a `name`) under its name.

  Usable as a class decorator. A name can be registered once.
  """
  name = getattr(factory, "name", "")
  if not name:
    raise ValueError(f"{factory!r} has no name")
  needs = getattr(factory, "needs", frozenset())
  if not needs <= NEEDS:
    raise ValueError(f"scorer {name!r}: unknown needs {sorted(needs - NEEDS)}"
                     f"; known: {sorted(NEEDS)}")
  known = _REGISTRY.get(name)
  if known is not None and known is not factory:
    raise ValueError(f"a scorer named {name!r} is already registered")
  _REGISTRY[name] = factory
  return factory


def get_scorer(name: str, **kwargs) -> Scorer:
  """A registered scorer, built with `kwargs` (e.g. get_scorer("lagkv",
  lag=64)). Raises ValueError listing the known names for an unknown one."""
  try:
    factory = _REGISTRY[name]
  except KeyError:
    raise ValueError(f"unknown scorer {name!r}; known scorers: "
                     f"{', '.join(available_scorers())}") from None
  return factory(**kwargs)


def available_scorers() -> tuple[str, ...]:
  """The registered names, sorted."""
  return tuple(sorted(_REGISTRY))


def family_of(scorer) -> str:
  """The family of a Scorer or a registered factory, from its declared
  `needs` and `learned` (FAMILIES)."""
  if getattr(scorer, "learned", False):
    return "learned"
  needs = frozenset(getattr(scorer, "needs", frozenset()))
  if "importance" in needs:
    return "oracle"
  if needs & PREFILL_ATTENTION:
    return "query_aware"
  return "query_free"


def scorers_in(family: str) -> tuple[str, ...]:
  """The registered names of a family, sorted."""
  if family not in FAMILIES:
    raise ValueError(f"unknown scorer family {family!r}; known: {FAMILIES}")
  return tuple(n for n in available_scorers()
               if family_of(_REGISTRY[n]) == family)
